"""GGUF quantized blocks decoded with numpy, following ggml's block layouts (ggml-quants.c).

Most GGUF types are affine in groups of 32 weights, w = scale * q + bias, which is exactly
MLX's quantized layout with group size 32, so they stay quantized: Q4_0, Q4_1, Q5_0, Q5_1,
Q8_0, and the K-quants Q4_K and Q5_K (a 256-weight super-block with a 6-bit scale and min
for each group of 32). Q2_K, Q3_K and Q6_K have a scale per 16 weights, a group size MLX
does not have, so they are dequantized. Scales and biases are float16, as `mx.load` gives
them for Q4_0 (a K-quant's scale is a product of two numbers, rounded once to float16).
"""

import numpy as np

from model.errors import ModelError

# ggml_type ids, as stored in a GGUF tensor's header.
TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
    24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0",
    35: "TQ2_0", 39: "MXFP4",
}  # fmt: skip
# name -> (weights per block, bytes per block, bits of q when kept quantized or 0 when dequantized)
BLOCKS = {
    "Q4_0": (32, 18, 4),
    "Q4_1": (32, 20, 4),
    "Q5_0": (32, 22, 5),
    "Q5_1": (32, 24, 5),
    "Q8_0": (32, 34, 8),
    "Q4_K": (256, 144, 4),
    "Q5_K": (256, 176, 5),
    "Q2_K": (256, 84, 0),
    "Q3_K": (256, 110, 0),
    "Q6_K": (256, 210, 0),
}
GROUP_SIZE = 32


def _f16(blocks: np.ndarray, at: int) -> np.ndarray:
    """The float16 at byte `at` of each block, as a float32 column."""
    return blocks[:, at : at + 2].copy().view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Low nibbles then high nibbles: ggml's order for 32 weights in 16 bytes."""
    return np.concatenate([qs & 0xF, qs >> 4], axis=-1)


def _high_bits(qh: np.ndarray, count: int) -> np.ndarray:
    """Bit i of a little-endian uint32 for each of `count` weights, as 0 or 16."""
    bits = qh.copy().view(np.uint32) >> np.arange(count, dtype=np.uint32)
    return ((bits & 1) << 4).astype(np.uint8)


def _k_scales_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: eight 6-bit scales and eight 6-bit mins packed in 12 bytes (ggml's get_scale_min_k4)."""
    s = packed.astype(np.uint8)
    scales = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    mins = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return scales.astype(np.float32), mins.astype(np.float32)


def _affine(kind: str, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q (uint8, per weight), scale and bias (float32, per group of 32) for each block."""
    if kind in ("Q4_0", "Q4_1"):
        d = _f16(b, 0)
        q = _nibbles(b[:, -16:])
        return q, d, (_f16(b, 2) if kind == "Q4_1" else -8 * d)
    if kind in ("Q5_0", "Q5_1"):
        d = _f16(b, 0)
        at = 4 if kind == "Q5_1" else 2
        q = _nibbles(b[:, at + 4 :]) | _high_bits(b[:, at : at + 4], 32)
        return q, d, (_f16(b, 2) if kind == "Q5_1" else -16 * d)
    if kind == "Q8_0":
        d = _f16(b, 0)
        q = (b[:, 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return q, d, -128 * d
    # Q4_K, Q5_K: four chunks of 64 weights; a chunk's low nibbles are one group, its high nibbles the next.
    d, dmin = _f16(b, 0), _f16(b, 2)
    scales, mins = _k_scales_mins(b[:, 4:16])
    qs = b[:, -128:].reshape(-1, 4, 1, 32)
    q = np.concatenate([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32)
    if kind == "Q5_K":
        # Group g takes its fifth bit from bit g of each of the 32 qh bytes.
        qh = b[:, 16:48].reshape(-1, 1, 32)
        q = q | (((qh >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1) << 4)
    return q.reshape(-1, 256), d * scales, -dmin * mins


def _dequantized(kind: str, b: np.ndarray) -> np.ndarray:
    """Q2_K, Q3_K, Q6_K: 256 weights a block, a scale for each 16, as float32."""
    if kind == "Q6_K":
        ql, qh = b[:, 0:128].reshape(-1, 2, 64), b[:, 128:192].reshape(-1, 2, 32)
        lo, hi = ql[:, :, :32], ql[:, :, 32:]
        parts = [lo & 0xF, hi & 0xF, lo >> 4, hi >> 4]  # 32 weights each, the 2 high bits from qh
        q = np.stack([p | (((qh >> (2 * i)) & 3) << 4) for i, p in enumerate(parts)], axis=2)
        q = q.reshape(-1, 16, 16).astype(np.float32) - 32
        scales = b[:, 192:208].view(np.int8).astype(np.float32)
        return (_f16(b, 208)[:, :, None] * scales[:, :, None] * q).reshape(-1, 256)
    if kind == "Q2_K":
        sc, qs = b[:, 0:16], b[:, 16:80].reshape(-1, 2, 1, 32)
        q = ((qs >> (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 4, 1)) & 3).reshape(-1, 16, 16)
        d, dmin = _f16(b, 80), _f16(b, 82)
        scale, low = d * (sc & 0xF), dmin * (sc >> 4)
        return (scale[:, :, None] * q - low[:, :, None]).reshape(-1, 256)
    # Q3_K: 2 low bits in qs, the third (inverted: clear means minus 4) in hmask, 6-bit signed scales.
    hmask, qs = b[:, 0:32], b[:, 32:96].reshape(-1, 2, 1, 32)
    shifts = (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 4, 1)
    low = (qs >> shifts) & 3
    bit = np.arange(8, dtype=np.uint8).reshape(1, 2, 4, 1)  # bit 4*half + j of each hmask byte
    high = (hmask.reshape(-1, 1, 1, 32) >> bit) & 1
    q = (low.astype(np.int8) - 4 * (1 - high.astype(np.int8))).reshape(-1, 16, 16).astype(np.float32)
    return (_f16(b, 108)[:, :, None] * _q3_scales(b[:, 96:108])[:, :, None] * q).reshape(-1, 256)


def _q3_scales(packed: np.ndarray) -> np.ndarray:
    """Sixteen 6-bit scales in 12 bytes: low nibbles in bytes 0-7, high 2 bits in bytes 8-11; minus 32."""
    a = packed.copy().view(np.uint32)  # three words per block
    a0, a1, tmp = a[:, 0], a[:, 1], a[:, 2]
    m2, m1 = np.uint32(0x0F0F0F0F), np.uint32(0x03030303)
    words = np.stack(
        [
            (a0 & m2) | (((tmp >> 0) & m1) << 4),
            (a1 & m2) | (((tmp >> 2) & m1) << 4),
            ((a0 >> 4) & m2) | (((tmp >> 4) & m1) << 4),
            ((a1 >> 4) & m2) | (((tmp >> 6) & m1) << 4),
        ],
        axis=1,
    )
    return words.view(np.int8).reshape(-1, 16).astype(np.float32) - 32


def _blocks(kind: str, raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).reshape(-1, BLOCKS[kind][1])


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Rows of `bits`-bit values as MLX packs them: one little-endian bit stream, read as uint32.

    Eight values fill `bits` whole bytes, so each run of eight is summed into a uint64 and its
    low `bits` bytes kept (hosts are little-endian: x86-64 and Apple silicon)."""
    rows = q.shape[0]
    eights = q.reshape(rows, -1, 8)
    acc = np.zeros(eights.shape[:2], dtype=np.uint64)
    for k in range(8):
        acc |= eights[:, :, k].astype(np.uint64) << np.uint64(bits * k)
    packed = acc.view(np.uint8).reshape(rows, -1, 8)[:, :, :bits]
    return np.ascontiguousarray(packed).reshape(rows, -1).view(np.uint32)


def _row_chunks(rows: int, cols: int):
    """Row ranges of about a million weights: bounded temporaries for a 128k-row embedding."""
    step = max(1, (1 << 20) // cols)
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def to_affine(kind: str, raw: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Packed uint32 weights, float16 scales and float16 biases (group 32) for a tensor of `rows` rows."""
    per_block, size, bits = BLOCKS[kind]
    cols = raw.shape[-1] // size * per_block
    weight = np.empty((rows, cols * bits // 32), dtype=np.uint32)
    scales = np.empty((rows, cols // GROUP_SIZE), dtype=np.float16)
    biases = np.empty_like(scales)
    for a, b in _row_chunks(rows, cols):
        q, scale, bias = _affine(kind, _blocks(kind, raw[a:b]))
        weight[a:b] = pack_bits(q.reshape(b - a, -1), bits)
        scales[a:b] = scale.reshape(b - a, -1)
        biases[a:b] = bias.reshape(b - a, -1)
    return weight, scales, biases


def dequantize(kind: str, raw: np.ndarray, rows: int, dtype=np.float32) -> np.ndarray:
    """Weights, rows by columns, in `dtype`."""
    if kind not in BLOCKS:
        raise ModelError(f"GGUF type {kind} cannot be read by glasschat.")
    per_block, size, bits = BLOCKS[kind]
    cols = raw.shape[-1] // size * per_block
    out = np.empty((rows, cols), dtype=dtype)
    for a, b in _row_chunks(rows, cols):
        blocks = _blocks(kind, raw[a:b])
        if bits == 0:
            out[a:b] = _dequantized(kind, blocks).reshape(b - a, -1)
            continue
        q, scale, bias = _affine(kind, blocks)
        groups = q.reshape(-1, GROUP_SIZE).astype(np.float32)
        out[a:b] = (groups * scale.reshape(-1, 1) + bias.reshape(-1, 1)).reshape(b - a, -1)
    return out
