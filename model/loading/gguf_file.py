"""A GGUF file read with numpy, for the tensor types `mx.load` cannot read or cannot keep quantized.

`mx.load` keeps Q4_0, Q4_1 and Q8_0 as MLX 4- and 8-bit weights and dequantizes Q2_K,
Q4_K and Q6_K to float16, but refuses a whole file that holds a single Q3_K, Q5_K, Q5_0
or Q5_1 tensor, and most GGUFs on the Hub (Q4_K_M, Q5_K_M) hold some. Its Q4_K is also
wrong: MLX 0.32's GGUF code (gguf-tools) scales every second group of 32 with the scale
of the group before (measured against llama.cpp's `gguf.quants.dequantize`: errors as
large as the weights). Files of only the types it keeps go through `mx.load` as before;
any other file is read here, with the same tensor names and metadata as `mx.load` gives
(tested on the default model), each tensor converted as `gguf_quants` says.

The format (ggml's docs/gguf.md): magic, version, counts, key-value metadata, tensor
infos (name, dims innermost first, type, offset), then the aligned tensor data.
"""

import mmap
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from model.errors import ModelError
from model.loading import gguf_quants

# Types `mx.load` reads and keeps as they are: those files need nothing from here.
MX_LOAD_TYPES = {"F32", "F16", "Q4_0", "Q4_1", "Q8_0"}
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32, 7: np.bool_}
_NUMPY.update({10: np.uint64, 11: np.int64, 12: np.float64})
_MX = {np.uint64: mx.uint64, np.int64: mx.int64, np.float64: mx.float32}  # mlx has no float64 on every device
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: outermost first
    kind: str  # ggml type name, e.g. "Q4_K"
    offset: int  # from the start of the data section


class _Cursor:
    """Reads the header from a memory map: one Python call per string, not one file read."""

    def __init__(self, buf: mmap.mmap):
        self.buf, self.pos = buf, 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.buf):
            raise EOFError("end of file inside the header")
        self.pos += size
        return self.buf[self.pos - size : self.pos]

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.scalar("<Q")).decode("utf-8", errors="replace")

    def value(self, kind: int):
        """A metadata value in the form `mx.load` returns it."""
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.scalar("<I"), self.scalar("<Q")
            if item == _STRING:
                return [self.string() for _ in range(n)]
            if item in _NUMPY:
                dtype = np.dtype(_NUMPY[item]).newbyteorder("<")
                values = np.frombuffer(self.take(n * dtype.itemsize), dtype=dtype)
                return mx.array(values.astype(dtype.newbyteorder("=")))
            return [self.value(item) for _ in range(n)]
        if kind in _SCALARS:
            value = np.array(self.scalar(_SCALARS[kind]), dtype=_NUMPY[kind])
            dtype = _MX.get(_NUMPY[kind])
            return mx.array(value) if dtype is None else mx.array(value, dtype=dtype)
        raise ValueError(f"unknown metadata type {kind}")

    def skip(self, kind: int) -> None:
        """Past a metadata value without building it (4x faster for a vocabulary's strings)."""
        if kind == _STRING:
            self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
        elif kind == _ARRAY:
            item, n = struct.unpack_from("<IQ", self.buf, self.pos)
            self.pos += 12
            if item == _STRING:
                for _ in range(n):
                    self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
            elif item in _NUMPY:
                self.pos += n * np.dtype(_NUMPY[item]).itemsize
            else:
                for _ in range(n):
                    self.skip(item)
        elif kind in _SCALARS:
            self.pos += struct.calcsize(_SCALARS[kind])
        else:
            raise ValueError(f"unknown metadata type {kind}")


def read_header(path: Path, metadata: bool = True) -> tuple[dict, list[TensorInfo], int]:
    """Metadata (only `general.alignment` unless asked), tensor infos, and where the tensor data starts."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        c = _Cursor(buf)
        if c.take(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        version = c.scalar("<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        n_tensors, n_meta = c.scalar("<Q"), c.scalar("<Q")
        meta = {}
        for _ in range(n_meta):
            key, kind = c.string(), c.scalar("<I")
            if metadata or key == "general.alignment":
                meta[key] = c.value(kind)
            else:
                c.skip(kind)
        infos = []
        for _ in range(n_tensors):
            name = c.string()
            dims = [c.scalar("<Q") for _ in range(c.scalar("<I"))]
            kind = gguf_quants.TYPE_NAMES.get(c.scalar("<I"), "unknown")
            infos.append(TensorInfo(name, tuple(reversed(dims)), kind, c.scalar("<Q")))
        align = int(meta["general.alignment"].item()) if "general.alignment" in meta else 32
        start = -(-c.pos // align) * align
    return meta, infos, start


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
    if info.kind not in gguf_quants.BLOCKS:
        raise ModelError(
            f"Tensor '{info.name}' is stored as {info.kind}, a GGUF type glasschat cannot read "
            f"(it reads F32, F16, BF16, {', '.join(gguf_quants.BLOCKS)}); use a Q4_K_M, Q5_K_M, Q8_0 or F16 file."
        )
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
