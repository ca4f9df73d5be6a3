"""Attention over the KV cache by the extension's kernel, when it is built and applies.

One primitive takes the new queries and every key and value they may see (float32,
or 4- and 8-bit as `mx.quantize` stores them) and returns softmax(q k^T * scale) v,
with the causal mask, a sliding window and soft-capping applied inside. A decode
step (or a verify pass of up to 8 rows) reads each key and value once, split over
the cores by blocks of keys; a prefill chunk runs blocked, flash-style, with memory
linear in the length (model/kernels/attention_kernels.h says how). MLX's CPU path
builds the same thing from ~10 generic ops a layer, with a softmax on one core:
at 2,048 tokens of context it took most of a decode step.
"""

import os
from typing import Optional

import mlx.core as mx

from model.kernels import qmv
from model.kernels.device import cpu_primitives

THREADS_ENV = "GLASSCHAT_ATTENTION_THREADS"
MAX_HEAD_DIM = 256

_state: dict = {}


def _default_threads() -> int:
    # Every core: at long context a step's attention is milliseconds of memory reads, and the
    # kernel only splits when there are at least 4,096 keys to share out (see attention_core.h).
    return max(1, min(os.cpu_count() or 1, 8))


def _extension():
    """The loaded extension with the attention kernel in it, or None (older build, not built)."""
    try:
        return _state["ext"]
    except KeyError:
        pass
    ext = qmv.extension()
    if ext is not None and not hasattr(ext, "attention"):
        ext = None  # built before the attention kernel: reinstall to get it
    if ext is not None:
        ext.set_attention_threads(int(os.environ.get(THREADS_ENV) or _default_threads()))
    _state["ext"] = ext
    return ext


def usable(q: mx.array) -> bool:
    """Whether the kernel can take these queries: built, on the CPU, float32, a head size it knows."""
    return (
        q.dtype == mx.float32
        and q.ndim == 4
        and q.shape[-1] <= MAX_HEAD_DIM
        and cpu_primitives()
        and _extension() is not None
    )


def attention(
    q: mx.array, keys: mx.array, values: mx.array, scale: float, causal: bool, window: int, softcap: Optional[float]
) -> Optional[mx.array]:
    """softmax(q k^T * scale) v over float32 keys and values (B, nkv, S, hd); None if the kernel cannot take them."""
    if keys.dtype != mx.float32 or values.dtype != mx.float32:
        return None
    return _extension().attention(q, keys, values, scale, softcap or 0.0, causal, window)


def quantized_attention(
    q: mx.array,
    keys: tuple,
    values: tuple,
    group_size: int,
    bits: int,
    scale: float,
    causal: bool,
    window: int,
    softcap: Optional[float],
) -> Optional[mx.array]:
    """The same over (packed, scales, biases) triples; None if the kernel cannot take them."""
    if bits not in (4, 8) or group_size not in (32, 64, 128) or q.shape[-1] % group_size:
        return None
    if any(part.dtype != mx.float32 for part in (*keys[1:], *values[1:])):
        return None
    return _extension().quantized_attention(q, *keys, *values, group_size, bits, scale, softcap or 0.0, causal, window)
