"""A GGUF file's header: its key/value metadata and tensor infos, read without MLX.

The format (ggml's docs/gguf.md): magic, version, counts, key-value metadata, tensor
infos (name, dims innermost first, type, offset), then the aligned tensor data.
Two readers need it: the loader (`gguf_file`, which turns the values into what
`mx.load` returns) and the Models screen (`describe`, which reads a few keys of
every file in the Hub cache from a UI worker thread, so it must not touch MLX).
Values come back as Python strings, lists of strings, and numpy scalars and
arrays. A key not asked for is skipped without building its value (4x faster
for a vocabulary's strings). The structure is checked as it is read (`gguf_checks`):
every count against the bytes left, before anything is built from it.
"""

import mmap
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from model.loading import gguf_checks
from model.loading.gguf_quants import TYPE_NAMES

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
NUMPY_TYPES = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32}
NUMPY_TYPES.update({7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64})
_STRING, _ARRAY = 8, 9
_LENGTH = struct.Struct("<Q")
# The fewest bytes a value of each type takes: a string or an array is at least its length field.
_LEAST = {**{k: struct.calcsize(f) for k, f in _SCALARS.items()}, _STRING: 8, _ARRAY: 12}
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

    @property
    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, size: int) -> bytes:
        if size > self.left:
            raise EOFError("end of file inside the header")
        self.pos += size
        return self.buf[self.pos - size : self.pos]

    def jump(self, size: int) -> None:
        """Past `size` bytes without copying them."""
        if size > self.left:
            raise EOFError("end of file inside the header")
        self.pos += size

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.scalar("<Q")).decode("utf-8", errors="replace")

    def array_head(self) -> tuple[int, int]:
        """An array's item type and length, checked: one level deep, and no longer than the file could hold."""
        item, n = self.scalar("<I"), self.scalar("<Q")
        if item not in _LEAST or item == _ARRAY:
            raise gguf_checks.BadGGUF(f"holds an array of type {item}, which GGUF does not have")
        gguf_checks.check_count("array items", n, _LEAST[item], self.left)
        return item, n

    def value(self, kind: int):
        """A metadata value: a str, a list, or a numpy scalar or array of the stored type."""
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.array_head()
            if item == _STRING:
                return [self.string() for _ in range(n)]
            dtype = np.dtype(NUMPY_TYPES[item]).newbyteorder("<")
            return np.frombuffer(self.take(n * dtype.itemsize), dtype=dtype).astype(dtype.newbyteorder("="))
        if kind in _SCALARS:
            return NUMPY_TYPES[kind](self.scalar(_SCALARS[kind]))
        raise gguf_checks.BadGGUF(f"holds a metadata value of type {kind}, which GGUF does not have")

    def skip(self, kind: int) -> None:
        """Past a metadata value without building it."""
        if kind == _STRING:
            self.jump(self.scalar("<Q"))
        elif kind == _ARRAY:
            item, n = self.array_head()
            if item == _STRING:  # a vocabulary: 100,000s of strings, so a tight loop
                buf, pos, end, length = self.buf, self.pos, len(self.buf), _LENGTH.unpack_from
                for _ in range(n):
                    if pos + 8 > end:
                        raise EOFError("end of file inside the header")
                    pos += 8 + length(buf, pos)[0]
                if pos > end:
                    raise EOFError("end of file inside the header")
                self.pos = pos
            else:
                self.jump(n * _LEAST[item])
        elif kind in _SCALARS:
            self.jump(_LEAST[kind])
        else:
            raise gguf_checks.BadGGUF(f"holds a metadata value of type {kind}, which GGUF does not have")


def read_header(path: Path, keys: Optional[Collection[str]] = None) -> tuple[dict, list[TensorInfo], int]:
    """The metadata (every key, or only `keys` and the alignment), the tensor infos, where the data starts.

    Raises ValueError for a file that is not GGUF (`gguf_checks.BadGGUF` for one that breaks the
    format, with the reason), EOFError for one cut short."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        c = _Cursor(buf)
        if c.take(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        gguf_checks.check_version(c.scalar("<I"))
        n_tensors, n_meta = c.scalar("<Q"), c.scalar("<Q")
        # Least sizes: a key-value pair is a key, a type and a value; a tensor info a name, a
        # dimension count, one dimension, a type and an offset.
        gguf_checks.check_count("metadata entries", n_meta, 8 + 4 + 1, c.left)
        gguf_checks.check_count("tensors", n_tensors, 8 + 4 + 8 + 4 + 8, c.left)
        meta, seen = {}, set()
        for _ in range(n_meta):
            key, kind = c.take(_key_length(c)).decode("utf-8", errors="replace"), c.scalar("<I")
            gguf_checks.check_key(key, seen)
            if keys is None or key in keys or key == ALIGNMENT:
                meta[key] = c.value(kind)
            else:
                c.skip(kind)
        infos, names = [], set()
        for _ in range(n_tensors):
            name = c.string()
            n_dims = c.scalar("<I")
            gguf_checks.check_dimension_count(name, n_dims)
            dims = [c.scalar("<Q") for _ in range(n_dims)]
            type_id = c.scalar("<I")
            gguf_checks.check_tensor_info(name, dims, type_id, TYPE_NAMES, names)
            infos.append(TensorInfo(name, tuple(reversed(dims)), TYPE_NAMES[type_id], c.scalar("<Q")))
        align = gguf_checks.check_alignment(meta[ALIGNMENT]) if ALIGNMENT in meta else 32
        start = -(-c.pos // align) * align
        gguf_checks.check_layout(infos, align, max(0, len(buf) - start))  # a vocabulary-only file has no data
    return meta, infos, start


def _key_length(c: _Cursor) -> int:
    length = c.scalar("<Q")
    if length > gguf_checks.MAX_KEY:
        raise gguf_checks.BadGGUF(f"holds a metadata key {length} bytes long (GGUF allows {gguf_checks.MAX_KEY})")
    return length
