"""A GGUF header's structure checked while it is read, before `mx.load` (C code) or numpy sees the file.

`gguf_header` calls these as it goes. They follow llama.cpp's own reader (ggml's gguf.cpp),
which refuses the same things: an unknown version (we read 2 and 3, as it does; version 1
stored counts in 32 bits), an alignment that is not a power of two, more than four dimensions
or a negative one, a tensor whose offset is not where the previous one ends (rounded up to the
alignment), a duplicate key or tensor name, and counts the file is too short to hold. A
count is checked against the bytes left *before* anything is built from it, so a header
claiming 2^63 strings costs nothing; the tensor data's size is checked against its type and
shape, so no reader is asked for bytes past the end of the file.

Each refusal is a `BadGGUF`, a ValueError whose text is the reason as a phrase; the loader
adds the file's name, and the Models screen shows it beside the entry.
"""

VERSIONS = (2, 3)
MAX_ALIGNMENT = 1 << 20  # 32 everywhere in practice; a larger power of two only wastes the file
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME = 64  # GGML_MAX_NAME: llama.cpp cannot name a longer tensor
MAX_KEY = 65_535  # gguf.cpp's limit on a key's length

# ggml type -> (weights per block, bytes per block), as ggml's type traits give them.
BLOCK_BYTES = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "F64": (1, 8), "I8": (1, 1), "I16": (1, 2), "I32": (1, 4),
    "I64": (1, 8), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "Q8_1": (32, 40), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176),
    "Q6_K": (256, 210), "Q8_K": (256, 292), "IQ2_XXS": (256, 66), "IQ2_XS": (256, 74), "IQ3_XXS": (256, 98),
    "IQ1_S": (256, 50), "IQ4_NL": (32, 18), "IQ3_S": (256, 110), "IQ2_S": (256, 82), "IQ4_XS": (256, 136),
    "IQ1_M": (256, 56), "TQ1_0": (256, 54), "TQ2_0": (256, 66), "MXFP4": (32, 17),
}  # fmt: skip


class BadGGUF(ValueError):
    """The header breaks the format; the text says how (after the file's name)."""

    damaged = True  # the file is corrupt (re-download it), rather than of a kind glasschat does not read


class UnreadableGGUF(BadGGUF):
    damaged = False


def check_version(version: int) -> None:
    if version in VERSIONS:
        return
    if version & 0xFFFF == 0 and (version >> 24) in VERSIONS:
        raise UnreadableGGUF(f"is a big-endian GGUF (version {version >> 24}); glasschat reads little-endian files")
    raise UnreadableGGUF(f"is GGUF version {version}; glasschat reads versions 2 and 3 (as llama.cpp does)")


def check_count(what: str, count: int, least_bytes: int, left: int) -> None:
    """`count` items of at least `least_bytes` each must fit in the `left` bytes that remain."""
    if count * least_bytes > left:
        raise BadGGUF(
            f"is truncated or corrupt: it claims {count:,} {what}, more than its last {left:,} bytes could hold"
        )


def check_key(key: str, seen: set) -> None:
    if key in seen:
        raise BadGGUF(f"holds the metadata key '{key[:60]}' twice")
    seen.add(key)


def check_alignment(value) -> int:
    """`general.alignment`: a power of two (llama.cpp's rule), and not an absurd one."""
    if isinstance(value, (str, list)) or getattr(value, "ndim", 0) != 0 or getattr(value, "dtype", None) is None:
        raise BadGGUF(f"has general.alignment {str(value)[:40]!r}, not a number")
    if value.dtype.kind not in "iu":
        raise BadGGUF(f"has general.alignment {value}, not a whole number")
    align = int(value)
    if align <= 0 or align & (align - 1) or align > MAX_ALIGNMENT:
        raise BadGGUF(f"has general.alignment {align}; it must be a power of two up to {MAX_ALIGNMENT}")
    return align


def check_dimension_count(name: str, n_dims: int) -> None:
    if not 1 <= n_dims <= MAX_DIMS:
        raise BadGGUF(f"gives tensor '{name[:60]}' {n_dims} dimensions (1 to {MAX_DIMS})")


def check_tensor_info(name: str, dims: list[int], type_id: int, type_names: dict, seen: set) -> None:
    """One tensor's name, dimensions and type, before any size is computed from them."""
    if len(name.encode()) > MAX_TENSOR_NAME:
        raise BadGGUF(f"names a tensor {len(name.encode())} bytes long (llama.cpp allows {MAX_TENSOR_NAME})")
    if name in seen:
        raise BadGGUF(f"holds two tensors named '{name}'")
    seen.add(name)
    if any(d < 1 or d >= 1 << 62 for d in dims):
        raise BadGGUF(f"gives tensor '{name}' the dimensions {dims}; each must be from 1 to 2^62")
    if type_id not in type_names or type_names[type_id] not in BLOCK_BYTES:
        raise BadGGUF(f"stores tensor '{name}' as type {type_id}, which is not a ggml type glasschat knows")


def tensor_bytes(name: str, shape: tuple[int, ...], kind: str) -> int:
    """The bytes of a tensor of this type and shape (numpy order: the last axis is a row)."""
    per_block, block_bytes = BLOCK_BYTES[kind]
    if shape[-1] % per_block:
        raise BadGGUF(f"gives tensor '{name}' rows of {shape[-1]} values, not whole {kind} blocks of {per_block}")
    elements = 1
    for d in shape:
        elements *= d
    if elements >= 1 << 62:
        raise BadGGUF(f"gives tensor '{name}' {elements} values, more than any file could hold")
    return elements // per_block * block_bytes


def check_layout(infos: list, alignment: int, data_bytes: int) -> None:
    """Each tensor where the previous one ends (rounded up to the alignment), and the last inside the file.

    `data_bytes`: the bytes from the start of the data section to the end of the file."""
    expected = 0
    for info in infos:
        size = tensor_bytes(info.name, info.shape, info.kind)
        if info.offset != expected:
            raise BadGGUF(
                f"puts tensor '{info.name}' at byte {info.offset} of the data; the one before it ends at {expected}"
            )
        if info.offset + size > data_bytes:
            raise BadGGUF(
                f"is truncated or corrupt: tensor '{info.name}' needs {size:,} bytes at {info.offset:,}, "
                f"and the data section holds {data_bytes:,}"
            )
        expected = -(-(info.offset + size) // alignment) * alignment
