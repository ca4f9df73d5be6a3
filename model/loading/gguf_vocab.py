"""A `tokenizers.Tokenizer` built from a GGUF's vocabulary, tokenizing as llama.cpp does.

GGUF stores tokens, their types, and either BPE merges or SentencePiece scores, under
`tokenizer.ggml.model`:

- `gpt2`: byte-level BPE (Llama 3, Qwen, SmolLM, GPT-2, StarCoder, DeepSeek): the merges,
  and a pre-tokenizer named by `tokenizer.ggml.pre` (see `pretokenizers`).
- `llama`: SentencePiece BPE (Llama 2, Mistral 7B, TinyLlama, Phi-3, Gemma 2 and 3): scores
  instead of merges. llama.cpp merges the adjacent pair whose joined text is the token with
  the highest score; ranking the merges by that score gives the same result through
  `tokenizers`' BPE. Spaces become `▁`, one `▁` goes before the text when
  `add_space_prefix` (and, as in llama.cpp, after every special token), and characters
  with no token of their own fall back to byte tokens `<0xE2>`.
- `gemma4`: BPE merges over raw UTF-8 with SentencePiece's `▁` and byte tokens; the text
  is split only at line breaks.

Control and unknown tokens are special (only template markup turns into them);
user-defined tokens match in any text, as in llama.cpp.
"""

from dataclasses import dataclass
from typing import Optional

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from model.errors import ModelError
from model.loading.pretokenizers import byte_level, gguf_pre_tokenizer
from model.loading.tokenizer_checks import check_gguf_vocab

# GGUF token types (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # SentencePiece's visible space


@dataclass
class GgufVocab:
    tokenizer: Tokenizer
    byte_level: bool  # GPT-2 byte-to-character pieces; else SentencePiece pieces (▁, <0xNN>)
    add_space_prefix: bool  # a ▁ goes before the text (decoding drops it again)
    byte_tokens: dict[int, int]  # token id -> the byte it stands for (SentencePiece byte fallback)
    bos_id: Optional[int]
    eos_id: Optional[int]
    add_bos: bool  # llama.cpp puts BOS first in a prompt


def _scalar(meta: dict, key: str, default=None):
    value = meta.get(key)
    return value.item() if value is not None else default


def _byte_tokens(tokens: list[str], types: list[int]) -> dict[int, int]:
    return {i: int(tok[3:5], 16) for i, (tok, kind) in enumerate(zip(tokens, types)) if kind == BYTE}


def _spm_merges(tokens: list[str], types: list[int], scores: list[float]) -> list[tuple[str, str]]:
    """Every split of a normal token into two normal tokens, best-scored result first."""
    normal = {tok: i for i, (tok, kind) in enumerate(zip(tokens, types)) if kind == NORMAL}
    found = []
    for tok, i in normal.items():
        for cut in range(1, len(tok)):
            left, right = tok[:cut], tok[cut:]
            if left in normal and right in normal:
                found.append((-scores[i], i, left, right))
    found.sort()
    return [(left, right) for _, _, left, right in found]


def _added_tokens(tokens: list[str], types: list[int], phi3: bool) -> list[AddedToken]:
    out = []
    for tok, kind in zip(tokens, types):
        if kind not in (CONTROL, UNKNOWN, USER_DEFINED):
            continue
        # llama.cpp's one per-model attribute here: Phi-3's special tokens eat the whitespace after them.
        rstrip = phi3 and tok not in ("<unk>", "<s>", "<|endoftext|>")
        out.append(AddedToken(tok, special=kind != USER_DEFINED, normalized=False, rstrip=rstrip))
    return out


def _byte_level_bpe(meta: dict, tokens: list[str]) -> Tokenizer:
    pre = gguf_pre_tokenizer(str(meta.get("tokenizer.ggml.pre", "default")))
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=pre.ignore_merges))
    tk.pre_tokenizer = byte_level(pre)
    tk.decoder = decoders.ByteLevel()
    return tk


def _sentencepiece(meta: dict, tokens: list[str], types: list[int], add_space_prefix: bool) -> Tokenizer:
    if "tokenizer.ggml.scores" not in meta:
        raise ModelError("This GGUF's SentencePiece vocabulary has no scores: the file is incomplete; re-convert it.")
    scores = meta["tokenizer.ggml.scores"].tolist()
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = _spm_merges(tokens, types, scores)
    unk = _scalar(meta, "tokenizer.ggml.unknown_token_id")
    tk = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=tokens[unk] if unk is not None else None,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    escape = normalizers.Replace(" ", SPACE)
    # Prepend runs on each piece between added tokens: llama.cpp's "after a special token".
    tk.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), escape]) if add_space_prefix else escape
    tk.decoder = _spm_decoder(add_space_prefix)
    return tk


def _gemma4(meta: dict, tokens: list[str]) -> Tokenizer:
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    # llama.cpp splits only at line breaks, then merges; a run of line breaks that is a token
    # (up to 31 here) it takes whole, which the merges reach anyway. A line that is a token is
    # still merged ("<unused0>" typed as text stays "<" "unused" "0" ">"), so no ignore_merges.
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True))
    tk.normalizer = normalizers.Replace(" ", SPACE)
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[^\n]+|[\n]+"), behavior="isolated", invert=False)
    tk.decoder = _spm_decoder(add_space_prefix=False)
    return tk


def _spm_decoder(add_space_prefix: bool):
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    return decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if add_space_prefix else []))


def vocab_from_gguf(meta: dict, file: str = "the GGUF") -> GgufVocab:
    kind = str(meta.get("tokenizer.ggml.model", "?"))
    if kind not in ("gpt2", "llama", "gemma4"):
        raise ModelError(
            f"This GGUF uses a '{kind}' tokenizer; glasschat reads BPE (gpt2, gemma4) and SentencePiece (llama) "
            "vocabularies from GGUF. Use the model's Hugging Face folder instead."
        )
    check_gguf_vocab(meta, file)
    try:
        return _vocab(meta, kind)
    except ModelError:
        raise
    except Exception as exc:  # the tokenizers library raises a bare Exception for a vocabulary it cannot build
        raise ModelError(f"{file}: its vocabulary cannot be built ({_line(exc)}): re-download it.") from None


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:100]}" if text else type(exc).__name__


def _vocab(meta: dict, kind: str) -> GgufVocab:
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = meta.get("tokenizer.ggml.token_type")
    types = types.tolist() if types is not None else [NORMAL] * len(tokens)
    sentencepiece = kind == "llama"
    add_space_prefix = bool(_scalar(meta, "tokenizer.ggml.add_space_prefix", sentencepiece))
    if kind == "gpt2":
        tk = _byte_level_bpe(meta, tokens)
    elif kind == "llama":
        tk = _sentencepiece(meta, tokens, types, add_space_prefix)
    else:
        tk = _gemma4(meta, tokens)
    name = str(meta.get("general.name", "")).lower()
    tk.add_tokens(_added_tokens(tokens, types, phi3="phi-3" in name or "phi3" in name))
    pre = str(meta.get("tokenizer.ggml.pre", ""))
    # llama.cpp's defaults: SentencePiece and Llama 3 / tekken / Gemma 4 add BOS; the file may say otherwise,
    # except for Gemma 4, whose BOS llama.cpp always adds.
    default_bos = sentencepiece or pre in ("llama3", "llama-v3", "llama-bpe", "tekken") or kind == "gemma4"
    add_bos = bool(_scalar(meta, "tokenizer.ggml.add_bos_token", default_bos)) or kind == "gemma4"
    return GgufVocab(
        tokenizer=tk,
        byte_level=kind == "gpt2",
        add_space_prefix=add_space_prefix and sentencepiece,
        byte_tokens=_byte_tokens(tokens, types) if kind != "gpt2" else {},
        bos_id=_scalar(meta, "tokenizer.ggml.bos_token_id"),
        eos_id=_scalar(meta, "tokenizer.ggml.eos_token_id"),
        add_bos=add_bos,
    )
