"""Text to token ids and back, built from GGUF metadata or `tokenizer.json`.

Two encoders share one vocabulary: `encode_text` treats everything as plain
text (a user typing `<|im_start|>` gets the characters, never the control
token), and `encode_markup` turns control tokens written in the chat template's
own markup into their ids.
"""

import json
import threading
from functools import lru_cache
from pathlib import Path
from typing import Optional

from tokenizers import Tokenizer

from model.errors import ModelError
from model.loading.gguf_vocab import SPACE, vocab_from_gguf
from model.loading.tokenizer_checks import read_json, read_tokenizer_json, special_token


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for raw bytes, inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    codes = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, codes)}


class TextTokenizer:
    def __init__(
        self,
        markup: Tokenizer,
        byte_level: bool,
        bos_id: Optional[int],
        eos_id: Optional[int],
        add_bos: bool = False,
        add_space_prefix: bool = False,
        byte_tokens: Optional[dict[int, int]] = None,
    ):
        self.markup = markup
        # One instance for both encoders, switched per call: a copy costs seconds for a large
        # vocabulary (to_str/from_str). The app thread counts tokens while the engine encodes.
        self._switch = threading.Lock()
        self.byte_level = byte_level
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        # SentencePiece puts a ▁ before the text; decoding takes that one space off again.
        self.add_space_prefix = add_space_prefix
        self.byte_tokens = byte_tokens if byte_tokens is not None else _byte_fallback_tokens(markup)
        self._unreadable = self._missing_bytes() if byte_level else set()
        added = markup.get_added_tokens_decoder()
        self.added_ids = set(added)
        self.special_ids = {i for i, tok in added.items() if tok.special}
        self.vocab_size = markup.get_vocab_size(with_added_tokens=True)

    def _missing_bytes(self) -> set[int]:
        """Bytes with no token of their own: trimmed vocabularies drop some control characters."""
        return {b for ch, b in _byte_decoder().items() if self.markup.token_to_id(ch) is None}

    def readable(self, text: str) -> str:
        """`text` with characters this vocabulary cannot encode replaced by U+FFFD.

        Encoding would silently drop them (SmolLM2 has no token for \\x04 or \\x16,
        for example); replacing keeps the gap visible and the round trip exact.
        """
        if not self._unreadable:
            return text
        return "".join("\ufffd" if any(b in self._unreadable for b in ch.encode()) else ch for ch in text)

    # --- encoding ------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """Plain text: control-token look-alikes stay characters."""
        return self.encode_spans(text, markup=False)[0]

    def encode_markup(self, text: str) -> list[int]:
        """Template markup: `<|im_start|>` written here is the control token."""
        return self.encode_spans(text, markup=True)[0]

    def encode_spans(self, text: str, markup: bool) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and the (start, end) characters of `text` each one covers."""
        with self._switch:
            self.markup.encode_special_tokens = not markup
            try:
                enc = self.markup.encode(text, add_special_tokens=False)
            finally:
                self.markup.encode_special_tokens = False  # at rest it is the markup encoder
        return enc.ids, enc.offsets

    def with_bos(self, ids: list[int]) -> list[int]:
        """A prompt as llama.cpp starts it: BOS first when the vocabulary asks for one and it is not there."""
        if self.add_bos and self.bos_id is not None and ids[:1] != [self.bos_id]:
            return [self.bos_id, *ids]
        return ids

    def token_id(self, text: str) -> Optional[int]:
        return self.markup.token_to_id(text)

    # --- decoding ------------------------------------------------------------
    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        """The text of `ids`, byte by byte as the streaming detokenizer builds it."""
        data = b"".join(self.token_bytes(i) for i in ids if not (skip_special and i in self.special_ids))
        text = data.decode("utf-8", errors="replace")
        return text[1:] if self.add_space_prefix and text.startswith(" ") else text

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes a token stands for (may be part of a UTF-8 character)."""
        piece = self.markup.id_to_token(token_id)
        if piece is None:
            return b""
        if token_id in self.added_ids:
            return piece.encode()  # added tokens are their own text, as llama.cpp prints them
        if self.byte_level:
            table = _byte_decoder()
            if all(ch in table for ch in piece):
                return bytes(table[ch] for ch in piece)
            return piece.encode()
        if token_id in self.byte_tokens:
            return bytes([self.byte_tokens[token_id]])  # SentencePiece byte fallback, <0xE2>
        return piece.replace(SPACE, " ").encode()

    def piece(self, token_id: int) -> str:
        """A token as readable text; bytes that are not whole characters show as \\xNN."""
        return self.token_bytes(token_id).decode("utf-8", errors="backslashreplace")


def _byte_fallback_tokens(tk: Tokenizer) -> dict[int, int]:
    """`<0xNN>` tokens of a SentencePiece-style vocabulary (a tokenizer.json does not type them)."""
    out = {}
    for piece, i in tk.get_vocab(with_added_tokens=False).items():
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            try:
                out[i] = int(piece[3:5], 16)
            except ValueError:
                pass
    return out


def tokenizer_from_gguf(meta: dict, file: str = "the GGUF") -> TextTokenizer:
    vocab = vocab_from_gguf(meta, file)
    return TextTokenizer(
        vocab.tokenizer,
        byte_level=vocab.byte_level,
        bos_id=vocab.bos_id,
        eos_id=vocab.eos_id,
        add_bos=vocab.add_bos,
        add_space_prefix=vocab.add_space_prefix,
        byte_tokens=vocab.byte_tokens,
    )


def tokenizer_from_folder(folder: Path) -> TextTokenizer:
    path = folder / "tokenizer.json"
    if not path.exists():
        raise ModelError(f"{folder} has no tokenizer.json: copy the model's tokenizer files into it.")
    tk, spec = read_tokenizer_json(path)
    decoder = json.dumps(spec.get("decoder") or {})
    byte_level = "ByteLevel" in decoder
    cfg_path = folder / "tokenizer_config.json"
    cfg = read_json(cfg_path) if cfg_path.exists() else {}
    if not isinstance(cfg, dict):
        raise ModelError(f"{cfg_path.name} is not a JSON object of settings: re-download it.")

    def special(name):
        value = special_token(cfg, name, cfg_path.name)
        return tk.token_to_id(value) if value else None

    return TextTokenizer(
        tk,
        byte_level=byte_level,
        bos_id=special("bos_token"),
        eos_id=special("eos_token"),
        add_bos=bool(cfg.get("add_bos_token", False)),
        # SentencePiece decoders that drop the prefix space again: Strip (Llama 2), Metaspace (older files).
        add_space_prefix=not byte_level and ('"Strip"' in decoder or '"Metaspace"' in decoder),
    )
