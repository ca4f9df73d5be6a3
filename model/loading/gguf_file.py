"""A GGUF file read with numpy, for the tensor types `mx.load` cannot read or cannot keep quantized.

`mx.load` keeps Q4_0, Q4_1 and Q8_0 as MLX 4- and 8-bit weights and dequantizes Q2_K,
Q4_K and Q6_K to float16, but refuses a whole file that holds a single Q3_K, Q5_K, Q5_0
or Q5_1 tensor, and most GGUFs on the Hub (Q4_K_M, Q5_K_M) hold some. Its Q4_K is also
wrong: MLX 0.32's GGUF code (gguf-tools) scales every second group of 32 with the scale
of the group before (measured against llama.cpp's `gguf.quants.dequantize`: errors as
large as the weights). Files of only the types it keeps go through `mx.load` as before;
any other file is read here, with the same tensor names and metadata as `mx.load` gives
(tested on the default model), each tensor converted as `gguf_quants` says.

The header is read by `gguf_header` (the format is described there).
"""

from collections import Counter
from pathlib import Path

import mlx.core as mx
import numpy as np

from model.errors import ModelError
from model.loading import gguf_header, gguf_quants
from model.loading.gguf_header import TensorInfo

# Types `mx.load` reads and keeps as they are: those files need nothing from here.
MX_LOAD_TYPES = {"F32", "F16", "Q4_0", "Q4_1", "Q8_0"}
_MX = {np.uint64: mx.uint64, np.int64: mx.int64, np.float64: mx.float32}  # mlx has no float64 on every device


def read_header(path: Path, metadata: bool = True) -> tuple[dict, list[TensorInfo], int]:
    """Metadata as `mx.load` returns it (only `general.alignment` unless asked), tensor infos, data start."""
    meta, infos, start = gguf_header.read_header(path, keys=None if metadata else ())
    return {key: _as_mlx(value) for key, value in meta.items()}, infos, start


def _as_mlx(value):
    """A header value in `mx.load`'s form: numbers as MLX scalars and arrays, text as it is."""
    if isinstance(value, np.ndarray):
        return mx.array(value)
    if isinstance(value, np.generic):
        dtype = _MX.get(value.dtype.type)
        return mx.array(value) if dtype is None else mx.array(value, dtype=dtype)
    return value


def tensor_types(infos: list[TensorInfo]) -> Counter:
    return Counter(info.kind for info in infos)


def describe(types: Counter) -> str:
    """The file's tensor types and what reading makes of them, for model info."""

    def held(kind: str) -> str:
        bits = gguf_quants.BLOCKS.get(kind, (0, 0, None))[2]
        return "" if bits is None or kind in MX_LOAD_TYPES else f" (as q{bits})" if bits else " (as float16)"

    return ", ".join(f"{kind} x{n}{held(kind)}" for kind, n in types.most_common())


def load(path: Path, header: tuple[dict, list[TensorInfo], int]) -> tuple[dict[str, mx.array], dict]:
    """Tensors and metadata as `mx.load(path, return_metadata=True)` names them."""
    meta, infos, start = header
    data = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = {}
    for info in infos:
        tensors.update(_tensor(info, data, start))
    return tensors, meta


def check_readable(infos: list[TensorInfo]) -> None:
    """One line naming the first tensor stored in a type glasschat cannot read (from the header alone)."""
    for info in infos:
        if info.kind not in gguf_quants.BLOCKS and info.kind not in ("F32", "F16", "BF16"):
            raise ModelError(
                f"Tensor '{info.name}' is stored as {info.kind}, a GGUF type glasschat cannot read "
                f"(it reads F32, F16, BF16, {', '.join(gguf_quants.BLOCKS)}); use a Q4_K_M, Q5_K_M, Q8_0 or F16 file."
            )


def _span(data: np.memmap, at: int, size: int) -> np.ndarray:
    if at + size > len(data):
        raise EOFError("tensor data runs past the end of the file")
    return data[at : at + size]


def _tensor(info: TensorInfo, data: np.memmap, start: int) -> dict[str, mx.array]:
    count = int(np.prod(info.shape))
    cols = info.shape[-1]
    rows = count // cols
    at = start + info.offset
    if info.kind in ("F32", "F16", "BF16"):
        dtype = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[info.kind]
        values = np.frombuffer(_span(data, at, count * np.dtype(dtype).itemsize), dtype=dtype).reshape(info.shape)
        array = mx.array(values)
        return {info.name: array.view(mx.bfloat16) if info.kind == "BF16" else array}
    check_readable([info])
    per_block, size, bits = gguf_quants.BLOCKS[info.kind]
    if cols % per_block:
        raise ValueError(f"tensor '{info.name}' has {cols} columns, not whole {info.kind} blocks")
    raw = np.asarray(_span(data, at, count // per_block * size)).reshape(rows, -1)
    if not bits:
        values = gguf_quants.dequantize(info.kind, raw, rows, dtype=np.float16).reshape(info.shape)
        return {info.name: mx.array(values)}
    weight, scales, biases = gguf_quants.to_affine(info.kind, raw, rows)
    stem = info.name[: -len(".weight")] if info.name.endswith(".weight") else info.name
    lead = info.shape[:-1]
    return {
        info.name: mx.array(weight.reshape(*lead, -1)),
        f"{stem}.scales": mx.array(scales.reshape(*lead, -1)),
        f"{stem}.biases": mx.array(biases.reshape(*lead, -1)),
    }
