"""The tokenizer's files and a GGUF's vocabulary checked before the tokenizers library (Rust) builds from them.

A `tokenizer.json` or a vocabulary that is not what it claims used to reach
`Tokenizer.from_file` or `models.BPE` and come back as a bare `Exception` with a Rust
message, or as a KeyError, TypeError or ValueError from our own code; a 100 MB JSON of
nested empty lists costs ~1.4 GB once Python has parsed it. Here each file is bounded in
size, parsed as JSON once, and each GGUF vocabulary key is checked for its type, its length
and its ids, so a bad one is named in one line.

The bounds are ten or more times the largest in use, measured on llama.cpp's test
vocabularies: at most 262,144 tokens (Gemma 4), 1.5 M characters in all, 256 in the longest
token (StarCoder), and a sum of squared lengths of 1.1e7 (Gemma 4); that sum is what building
a SentencePiece vocabulary's merges costs (every split of every token).
"""

import json
import math
import re
from pathlib import Path
from typing import Any

from model.errors import ModelError

MAX_TOKENIZER_JSON = 128 << 20  # Gemma 3's tokenizer.json, the largest we know, is 33 MB
MAX_SMALL_JSON = 16 << 20  # config.json, tokenizer_config.json: Gemma 3's tokenizer_config.json is 1.2 MB
MAX_TOKENS = 4_194_304  # the same bound as a config's vocab_size
MAX_TOKEN_CHARS = 4_096
MAX_TOTAL_CHARS = 16_000_000
MAX_SQUARED_CHARS = 200_000_000
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
BYTE = 6  # llama.cpp's token type for SentencePiece's byte fallback


def read_json(path: Path, limit: int = MAX_SMALL_JSON) -> Any:
    """A JSON file's value, or one line naming the file."""
    size = path.stat().st_size
    if size > limit:
        raise ModelError(
            f"{path.name} is {size:,} bytes; glasschat reads such a file up to {limit:,}: it is not a real one."
        )
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise ModelError(f"{path.name} is not valid JSON ({reason}): re-download it.") from None


def read_tokenizer_json(path: Path):
    """A `tokenizers.Tokenizer` and the JSON it came from."""
    from tokenizers import Tokenizer

    spec = read_json(path, MAX_TOKENIZER_JSON)
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise ModelError(f"{path.name} has no tokenizer model in it: it is not a Hugging Face tokenizer file.")
    try:
        return Tokenizer.from_str(json.dumps(spec)), spec
    except Exception as exc:  # the Rust library raises a bare Exception
        raise ModelError(f"{path.name} is not a tokenizer the tokenizers library can build ({_line(exc)}).") from None


def special_token(cfg: dict, name: str, file: str):
    """`bos_token` and the like in tokenizer_config.json: text, {"content": text}, or null."""
    value = cfg.get(name)
    if isinstance(value, dict):
        value = value.get("content")
    if value is not None and not isinstance(value, str):
        raise ModelError(f"{file}: '{name}' is {repr(value)[:40]}; it must be a token's text.")
    return value


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:100] if text else type(exc).__name__


# --- a GGUF's vocabulary ---------------------------------------------------------------------------


def _array(meta: dict, key: str, count: int, file: str):
    """A numeric array of one value per token, as a list (None when absent)."""
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, (str, list)) or getattr(value, "ndim", 0) != 1 or value.size != count:
        shown = f"{getattr(value, 'size', len(value))} values" if not isinstance(value, str) else "text"
        raise ModelError(f"{file}: '{key}' holds {shown} for {count} tokens; the vocabulary is broken: re-download it.")
    return value.tolist()


def check_gguf_vocab(meta: dict, file: str) -> None:
    """The keys `gguf_vocab` reads: each of the type, length and range it needs."""
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "general.name"):
        if key in meta and not isinstance(meta[key], str):
            raise ModelError(f"{file}: '{key}' is not text; the file is broken: re-download it.")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ModelError(f"{file}: 'tokenizer.ggml.tokens' is missing or not a list of text: the vocabulary is broken.")
    n = len(tokens)
    if not 1 <= n <= MAX_TOKENS:
        raise ModelError(f"{file}: the vocabulary has {n:,} tokens; glasschat reads 1 to {MAX_TOKENS:,}.")
    lengths = [len(t) for t in tokens]
    longest, total, squared = max(lengths), sum(lengths), sum(n * n for n in lengths)
    if longest > MAX_TOKEN_CHARS or total > MAX_TOTAL_CHARS or squared > MAX_SQUARED_CHARS:
        raise ModelError(
            f"{file}: the vocabulary's tokens are too long (the longest {longest:,} characters, "
            f"{total:,} in all); a real vocabulary's longest is a few hundred."
        )
    types = _array(meta, "tokenizer.ggml.token_type", n, file)
    scores = _array(meta, "tokenizer.ggml.scores", n, file)
    if scores is not None and not all(math.isfinite(s) for s in scores):
        raise ModelError(f"{file}: 'tokenizer.ggml.scores' holds a value that is not a finite number: re-download it.")
    if types is not None and meta.get("tokenizer.ggml.model") != "gpt2":
        broken = next(
            (tokens[i] for i, kind in enumerate(types) if kind == BYTE and not _BYTE_TOKEN.fullmatch(tokens[i])), None
        )
        if broken is not None:
            raise ModelError(
                f"{file}: token {broken[:20]!r} is marked as a byte but is not written <0xNN>: re-download it."
            )
    merges = meta.get("tokenizer.ggml.merges", [])
    if not isinstance(merges, list) or not all(isinstance(m, str) and " " in m for m in merges):
        raise ModelError(f"{file}: 'tokenizer.ggml.merges' is not a list of 'left right' pairs: re-download it.")
    for key in ("add_bos_token", "add_space_prefix"):
        value = meta.get(f"tokenizer.ggml.{key}")
        if value is not None and (isinstance(value, (str, list)) or getattr(value, "size", 0) != 1):
            raise ModelError(f"{file}: 'tokenizer.ggml.{key}' is not a single true or false: re-download it.")
    for key in ("bos_token_id", "eos_token_id", "unknown_token_id"):
        value = meta.get(f"tokenizer.ggml.{key}")
        if value is None:
            continue
        number = value.item() if not isinstance(value, (str, list)) and getattr(value, "size", 0) == 1 else value
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < n:
            raise ModelError(
                f"{file}: 'tokenizer.ggml.{key}' is {str(number)[:40]}, not a token of the vocabulary (0 to {n - 1})."
            )
