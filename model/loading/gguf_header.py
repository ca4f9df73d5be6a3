"""A GGUF file's header: its key/value metadata and tensor infos, read without MLX.

The format (ggml's docs/gguf.md): magic, version, counts, key-value metadata, tensor
infos (name, dims innermost first, type, offset), then the aligned tensor data.
Two readers need it: the loader (`gguf_file`, which turns the values into what
`mx.load` returns) and the Models screen (`describe`, which reads a few keys of
every file in the Hub cache from a UI worker thread, so it must not touch MLX).
Values come back as Python strings, lists of strings, and numpy scalars and
arrays. A key not asked for is skipped without building its value (4x faster
for a vocabulary's strings).
"""

import mmap
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from model.loading.gguf_quants import TYPE_NAMES

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
NUMPY_TYPES = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32}
NUMPY_TYPES.update({7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64})
_STRING, _ARRAY = 8, 9
ALIGNMENT = "general.alignment"  # always read: where the tensor data starts depends on it


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: outermost first
    kind: str  # ggml type name, e.g. "Q4_K"
    offset: int  # from the start of the data section

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


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
        """A metadata value: a str, a list, or a numpy scalar or array of the stored type."""
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.scalar("<I"), self.scalar("<Q")
            if item == _STRING:
                return [self.string() for _ in range(n)]
            if item in NUMPY_TYPES:
                dtype = np.dtype(NUMPY_TYPES[item]).newbyteorder("<")
                return np.frombuffer(self.take(n * dtype.itemsize), dtype=dtype).astype(dtype.newbyteorder("="))
            return [self.value(item) for _ in range(n)]
        if kind in _SCALARS:
            return NUMPY_TYPES[kind](self.scalar(_SCALARS[kind]))
        raise ValueError(f"unknown metadata type {kind}")

    def skip(self, kind: int) -> None:
        """Past a metadata value without building it."""
        if kind == _STRING:
            self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
        elif kind == _ARRAY:
            item, n = struct.unpack_from("<IQ", self.buf, self.pos)
            self.pos += 12
            if item == _STRING:
                for _ in range(n):
                    self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
            elif item in NUMPY_TYPES:
                self.pos += n * np.dtype(NUMPY_TYPES[item]).itemsize
            else:
                for _ in range(n):
                    self.skip(item)
        elif kind in _SCALARS:
            self.pos += struct.calcsize(_SCALARS[kind])
        else:
            raise ValueError(f"unknown metadata type {kind}")


def read_header(path: Path, keys: Optional[Collection[str]] = None) -> tuple[dict, list[TensorInfo], int]:
    """The metadata (every key, or only `keys` and the alignment), the tensor infos, where the data starts.

    Raises ValueError for a file that is not GGUF, EOFError for one cut short."""
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
            if keys is None or key in keys or key == ALIGNMENT:
                meta[key] = c.value(kind)
            else:
                c.skip(kind)
        infos = []
        for _ in range(n_tensors):
            name = c.string()
            dims = [c.scalar("<Q") for _ in range(c.scalar("<I"))]
            kind = TYPE_NAMES.get(c.scalar("<I"), "unknown")
            infos.append(TensorInfo(name, tuple(reversed(dims)), kind, c.scalar("<Q")))
        align = int(meta[ALIGNMENT]) if ALIGNMENT in meta else 32
        start = -(-c.pos // align) * align
    return meta, infos, start
