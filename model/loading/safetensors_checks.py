"""A safetensors file's header checked before `mx.load` (C++) reads it.

The format: an 8-byte little-endian header length, a JSON header mapping each tensor's name
to its dtype, shape and `data_offsets` [begin, end) in the byte buffer that follows, then the
buffer. The safetensors library refuses a header over 100 MB, a duplicate name, offsets
that do not match dtype x shape, and a buffer with holes or overlaps; glasschat refuses the
same, so `mx.load` is only ever given a file whose every read lands inside it. No MLX
here: the Models screen checks the headers of every folder it lists.
"""

import json
import struct
from pathlib import Path

MAX_HEADER = 100_000_000  # the safetensors library's own limit
MAX_DIMS = 8
# safetensors dtype -> bytes per value, for the dtypes MLX reads.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip


class BadSafetensors(ValueError):
    """The header breaks the format; the text says how, after the file's name."""


def _no_duplicates(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise BadSafetensors(f"names the tensor {twice[:60]!r} twice")
    return dict(pairs)


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Each tensor's dtype and shape, once the whole header has been checked against the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size < 8:
            raise BadSafetensors(f"is {size} bytes, too short for a safetensors header")
        (length,) = struct.unpack("<Q", f.read(8))
        if length > min(MAX_HEADER, size - 8):
            raise BadSafetensors(f"claims a header of {length:,} bytes in a file of {size:,}")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, BadSafetensors):
            raise
        raise BadSafetensors(f"has a header that is not JSON ({str(exc)[:60]})") from None
    if not isinstance(header, dict):
        raise BadSafetensors("has a header that is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}  # MLX writes null
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadSafetensors("has __metadata__ that is not a map of text to text")
    spans, tensors = [], {}
    for name, entry in header.items():
        shape, span = _entry(name, entry)
        tensors[name] = (entry["dtype"], shape)
        spans.append((*span, name))
    _check_buffer(sorted(spans), size - 8 - length)
    return tensors


def _entry(name: str, entry) -> tuple[tuple[int, ...], tuple[int, int]]:
    if not isinstance(entry, dict):
        raise BadSafetensors(f"describes tensor {name[:60]!r} with {str(entry)[:40]!r}, not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:  # a list is unhashable: a TypeError, found by fuzzing
        raise BadSafetensors(f"stores tensor {name[:60]!r} as {str(dtype)[:20]!r}, a dtype glasschat cannot read")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_count(d) for d in shape):
        raise BadSafetensors(f"gives tensor {name[:60]!r} the shape {str(shape)[:60]}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_count(o) for o in offsets):
        raise BadSafetensors(f"gives tensor {name[:60]!r} the offsets {str(offsets)[:60]}")
    begin, end = offsets
    values = 1
    for d in shape:
        values *= d
    if end < begin or end - begin != values * DTYPE_BYTES[dtype]:
        raise BadSafetensors(
            f"gives tensor {name[:60]!r} {end - begin} bytes, where {dtype} x {shape} takes {values * DTYPE_BYTES[dtype]}"
        )
    return tuple(shape), (begin, end)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62


def _check_buffer(spans: list[tuple[int, int, str]], buffer: int) -> None:
    """The tensors tile the buffer: no gap, no overlap, nothing past its end (the library's rule)."""
    at = 0
    for begin, end, name in spans:
        if begin != at:
            raise BadSafetensors(
                f"puts tensor {name[:60]!r} at byte {begin:,} of the data; the one before ends at {at:,}"
            )
        at = end
    if at != buffer:
        raise BadSafetensors(f"has {buffer:,} bytes of data where its tensors take {at:,}: it is truncated or corrupt")
