"""Text to token ids and back, built from GGUF metadata or `tokenizer.json`.

Two encoders share one vocabulary: `encode_text` treats everything as plain
text (a user typing `<|im_start|>` gets the characters, never the control
token), and `encode_markup` turns control tokens written in the chat template's
own markup into their ids.
"""

import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from model.errors import ModelError

# GGUF token types (llama.cpp's llama_token_type).
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# Pre-tokenizer splits by GGUF `tokenizer.ggml.pre`, as llama.cpp defines them.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _split(pattern: str):
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)


def _gguf_pre_tokenizer(pre: str):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"):
        # Each digit on its own, then GPT-2's split.
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _split(_GPT2_SPLIT), byte_level])
    if pre in ("llama3", "llama-bpe", "llama-v3", "smaug-bpe", "falcon3", "pixtral", "tekken"):
        return pre_tokenizers.Sequence([_split(_LLAMA3_SPLIT), byte_level])
    if pre in ("qwen2", "deepseek-r1-qwen"):
        return pre_tokenizers.Sequence([_split(_QWEN2_SPLIT), byte_level])
    return pre_tokenizers.Sequence([_split(_GPT2_SPLIT), byte_level])


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
        self, markup: Tokenizer, byte_level: bool, bos_id: Optional[int], eos_id: Optional[int], add_bos: bool = False
    ):
        self.markup = markup
        # A second instance that never matches special tokens in text.
        self.plain = Tokenizer.from_str(markup.to_str())
        self.plain.encode_special_tokens = True
        self.byte_level = byte_level
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        self._unreadable = self._missing_bytes() if byte_level else set()
        added = markup.get_added_tokens_decoder()
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
        return self.plain.encode(text, add_special_tokens=False).ids

    def encode_markup(self, text: str) -> list[int]:
        """Template markup: `<|im_start|>` written here is the control token."""
        return self.markup.encode(text, add_special_tokens=False).ids

    def token_id(self, text: str) -> Optional[int]:
        return self.markup.token_to_id(text)

    # --- decoding ------------------------------------------------------------
    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self.markup.decode(ids, skip_special_tokens=skip_special)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes a token stands for (may be part of a UTF-8 character)."""
        piece = self.markup.id_to_token(token_id)
        if piece is None:
            return b""
        if token_id in self.special_ids:
            return piece.encode()
        if self.byte_level:
            table = _byte_decoder()
            if all(ch in table for ch in piece):
                return bytes(table[ch] for ch in piece)
            return piece.encode()
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            return bytes([int(piece[3:5], 16)])  # SentencePiece byte fallback
        return piece.replace("\u2581", " ").encode()

    def piece(self, token_id: int) -> str:
        """A token as readable text; bytes that are not whole characters show as \\xNN."""
        return self.token_bytes(token_id).decode("utf-8", errors="backslashreplace")


def tokenizer_from_gguf(meta: dict) -> TextTokenizer:
    model_kind = str(meta.get("tokenizer.ggml.model", "?"))
    if model_kind != "gpt2":
        raise ModelError(
            f"This GGUF uses a '{model_kind}' tokenizer; glasschat reads byte-level BPE (gpt2) "
            "vocabularies from GGUF. Use the model's Hugging Face folder instead."
        )
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    types = meta.get("tokenizer.ggml.token_type")
    types = types.tolist() if types is not None else [1] * len(tokens)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tk.pre_tokenizer = _gguf_pre_tokenizer(str(meta.get("tokenizer.ggml.pre", "gpt2")))
    tk.decoder = decoders.ByteLevel()
    added = [
        AddedToken(tok, special=(kind == TOKEN_TYPE_CONTROL), normalized=False)
        for tok, kind in zip(tokens, types)
        if kind in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
    ]
    tk.add_tokens(added)

    def get_id(key):
        value = meta.get(key)
        return int(value.item()) if value is not None else None

    add_bos = meta.get("tokenizer.ggml.add_bos_token")
    return TextTokenizer(
        tk,
        byte_level=True,
        bos_id=get_id("tokenizer.ggml.bos_token_id"),
        eos_id=get_id("tokenizer.ggml.eos_token_id"),
        add_bos=bool(add_bos.item()) if add_bos is not None else False,
    )


def tokenizer_from_folder(folder: Path) -> TextTokenizer:
    path = folder / "tokenizer.json"
    if not path.exists():
        raise ModelError(f"{folder} has no tokenizer.json: copy the model's tokenizer files into it.")
    tk = Tokenizer.from_file(str(path))
    spec = json.loads(path.read_text())
    byte_level = "ByteLevel" in json.dumps(spec.get("decoder") or {})
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}

    def special(name):
        value = cfg.get(name)
        if isinstance(value, dict):
            value = value.get("content")
        return tk.token_to_id(value) if value else None

    return TextTokenizer(
        tk,
        byte_level=byte_level,
        bos_id=special("bos_token"),
        eos_id=special("eos_token"),
        add_bos=bool(cfg.get("add_bos_token", False)),
    )
