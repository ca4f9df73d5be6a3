"""What a model source is, read cheaply: architecture, size on disk and quantization, without loading weights.

The Models screen lists every model a user could open, and the Hub cache alone may
hold gigabytes: reading each with `mx.load` would take seconds and the memory of
the weights. A GGUF's header is a few kilobytes of key/value pairs before the
tensors (read by `gguf_header`, skipping the vocabulary's arrays), and a
folder's `config.json` says its family and how its weights are stored. No MLX here:
the UI calls this from a worker thread.

The same reads check what they read (`gguf_checks`, `safetensors_checks`, and the config's
values in `config_checks`), so a broken or hostile file is listed with the one line that
loading it would give, without loading it; the files' structure is checked, the weights
are not read.
"""

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from model.errors import ModelError
from model.loading import config_checks, gguf_header, safetensors_checks
from model.loading.gguf_checks import BadGGUF
from model.loading.tokenizer_checks import read_json

# llama.cpp's `general.file_type` (enum llama_ftype), as `gguf.LlamaFileType` names them.
GGUF_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
}
_WANTED = ("general.architecture", "general.name", "general.file_type", "general.size_label")


@dataclass(frozen=True)
class ModelCard:
    """One model the user could open, as the Models screen lists it."""

    source: Optional[str]  # what --model takes to load it: a path or a Hub id; None is the default model
    name: str  # shown
    architecture: str = "?"  # the family: llama, qwen3, gemma3_text, ...
    size_bytes: int = 0  # on disk
    quantization: str = "?"  # Q4_K_M, 4-bit (group 64), bfloat16, ...
    where: str = ""  # default, recent, Hub cache
    problem: str = ""  # why it may not load (missing, unreadable); empty if none is known


def describe_path(path: Path, name: Optional[str] = None, where: str = "") -> ModelCard:
    """A GGUF file or a model folder, read from its header or config only; its source is the path."""
    source = str(path)
    name = name or path.name
    if not path.exists():
        return ModelCard(source, name, where=where, problem="not found")
    try:
        if path.is_dir():
            return _describe_folder(path, source, name, where)
        return _describe_gguf(path, source, name, where)
    except (ValueError, ModelError) as exc:  # a check's reason (BadGGUF, BadSafetensors are ValueErrors)
        return ModelCard(source, name, size_bytes=_size(path), where=where, problem=problem_line(exc, path.name))
    except (OSError, EOFError, struct.error, MemoryError, OverflowError, RecursionError) as exc:
        return ModelCard(source, name, size_bytes=_size(path), where=where, problem=f"unreadable ({exc})"[:80])


def problem_line(exc: Exception, file: str) -> str:
    """The reason, short enough for a row: without the file's name (the row names it), at most 120 characters."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if text.startswith(f"{file}: "):
        text = text[len(file) + 2 :]
    if type(exc) is ValueError or isinstance(exc, UnicodeDecodeError):
        text = f"unreadable ({text})"
    elif isinstance(exc, BadGGUF):  # its reason follows the file's name: "is GGUF version 4; ..."
        text = f"the file {text}"
    return text if len(text) <= 120 else text[:119] + "…"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    # Hub snapshots are symlinks into blobs/: stat follows them to the real sizes.
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _describe_folder(path: Path, source: str, name: str, where: str) -> ModelCard:
    config_path = path / "config.json"
    if not config_path.exists():
        ggufs = sorted(path.glob("*.gguf"))
        problem = f"no config.json; it holds {len(ggufs)} GGUF file(s)" if ggufs else "no config.json"
        return ModelCard(source, name, size_bytes=_size(path), where=where, problem=problem)
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise ModelError("config.json is not a JSON object of settings")
    return ModelCard(
        source, name, folder_architecture(config), _size(path), folder_quantization(config, path), where,
        folder_problem(path, config),
    )  # fmt: skip


def folder_problem(folder: Path, config: dict) -> str:
    """Why a folder would not load, from its config's values and its weights' headers; empty if none is seen."""
    try:
        config_checks.check_hf_values(config)
        for weights in sorted(folder.glob("*.safetensors")):
            try:
                safetensors_checks.read_header(weights)
            except safetensors_checks.BadSafetensors as exc:
                return problem_line(ModelError(f"{weights.name} {exc}"), "")
    except ModelError as exc:
        return problem_line(exc, "")
    return ""


def folder_architecture(config: dict) -> str:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    found = config.get("model_type") or text.get("model_type")
    if not found and config.get("architectures"):
        found = config["architectures"][0]
    return str(found or "?")


def folder_quantization(config: dict, folder: Optional[Path] = None) -> str:
    """MLX's affine quantization, another tool's (GPTQ, AWQ, FP8), or the dtype the weights are stored in
    (from config.json, else from the safetensors header in `folder`: converters often leave it out)."""
    mlx_quant = config.get("quantization")
    if isinstance(mlx_quant, dict) and "bits" in mlx_quant:
        return f"{mlx_quant['bits']}-bit (group {mlx_quant.get('group_size', 64)})"
    other = config.get("quantization_config")
    if isinstance(other, dict):
        method = str(other.get("quant_method", "quantized"))
        return f"{method} {other['bits']}-bit" if "bits" in other else method
    dtype = config.get("torch_dtype") or config.get("dtype")
    if dtype:
        return str(dtype)
    return safetensors_dtype(folder) if folder is not None else "?"


# safetensors' dtype names, as config.json spells them.
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "U32": "uint32"}


def safetensors_dtype(folder: Path) -> str:
    """The dtype holding the most weights, from the first safetensors file's JSON header (its first bytes)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return "?"
    try:
        header = safetensors_checks.read_header(files[0])
    except (OSError, ValueError):
        return "?"  # the folder's problem says why
    sizes: dict[str, int] = {}
    for dtype, shape in header.values():
        sizes[dtype] = (
            sizes.get(dtype, 0) + int(np.prod(shape, dtype=np.float64)) * safetensors_checks.DTYPE_BYTES[dtype]
        )
    if not sizes:
        return "?"
    dtype = max(sizes, key=sizes.get)
    return _SAFETENSORS_DTYPES.get(dtype, dtype)


def _describe_gguf(path: Path, source: str, name: str, where: str) -> ModelCard:
    header = read_gguf_header(path)
    arch = str(header.get("general.architecture", "?"))
    file_type = header.get("general.file_type")
    if file_type is not None:
        quant = GGUF_FILE_TYPES.get(file_type, f"file type {file_type}")
    else:
        quant = header.get("dominant_type", "?")
    problem = ""
    try:
        config_checks.check_gguf_values(header, path.name)
    except ModelError as exc:
        problem = problem_line(exc, path.name)
    return ModelCard(source, name, arch, path.stat().st_size, quant, where, problem)


class _NotTheVocabulary:
    """The header keys read for a card: all but the tokenizer's (its arrays are most of a header)."""

    def __contains__(self, key: str) -> bool:
        return key in _WANTED or not key.startswith("tokenizer.")


def read_gguf_header(path: Path) -> dict:
    """The header keys the Models screen shows (and the shape keys it checks); without
    `general.file_type`, the tensors' dominant type.

    Raises ValueError for a file that is not GGUF (`gguf_checks.BadGGUF` with the reason for a broken one)."""
    meta, infos, _ = gguf_header.read_header(path, keys=_NotTheVocabulary())
    found = {key: value.item() if isinstance(value, np.generic) else value for key, value in meta.items()}
    found.pop(gguf_header.ALIGNMENT, None)
    if "general.file_type" not in found:
        found["dominant_type"] = _dominant_type(infos)
    return found


def _dominant_type(infos: list[gguf_header.TensorInfo]) -> str:
    """The tensor type holding the most elements (the one the file is named after, e.g. Q4_K)."""
    elements: dict[str, int] = {}
    for info in infos:
        elements[info.kind] = elements.get(info.kind, 0) + info.elements
    return max(elements, key=elements.get) if elements else "?"
