"""Scaled dot-product attention over what a cache returns: plain keys and values, or quantized ones.

Every attention the model computes goes through `attend`, so the cache only
stores and fetches, and the probe (see `probe`) sees the very arrays used. On a
CPU with the kernel extension built, `attend` is one primitive
(model.kernels.cache_attention); otherwise MLX's own ops, written out below.
"""

from typing import NamedTuple, Optional, Union

import mlx.core as mx
import mlx.nn as nn

from model import compute_path
from model.kernels import cache_attention
from model.network import fast_math


class QuantizedKV(NamedTuple):
    """Keys or values as `mx.quantize` stores them, with how to read them back."""

    packed: mx.array  # (B, nkv, S, hd * bits / 32), uint32
    scales: mx.array  # (B, nkv, S, hd / group_size)
    biases: mx.array
    group_size: int
    bits: int

    def dequantize(self) -> mx.array:
        return mx.dequantize(self.packed, self.scales, self.biases, group_size=self.group_size, bits=self.bits)


KV = Union[mx.array, QuantizedKV]


def plain(x: KV) -> mx.array:
    """Keys or values in full precision, whichever way the cache stored them."""
    return x.dequantize() if isinstance(x, QuantizedKV) else x


class SlidingWindow(NamedTuple):
    """A causal mask where each query also sees at most `size` keys back, its own included (Gemma)."""

    size: int

    def array(self, L: int, S: int) -> mx.array:
        """As (L, S) booleans: query i sits at key S - L + i, as with "causal"."""
        queries = mx.arange(S - L, S)[:, None]
        keys = mx.arange(S)[None, :]
        return (keys <= queries) & (queries - keys < self.size)


# None (every query sees every key), "causal" (the last query aligned with the last key),
# a SlidingWindow, or (L, S) booleans.
Mask = Union[None, str, SlidingWindow, mx.array]


def window_mask(start: int, n: int, window: Optional[int]) -> Mask:
    """For `n` queries at positions start.. over the keys of positions max(0, start - window + 1)..start+n-1:
    each sees the keys before it and at most `window` back (Gemma's sliding window, as llama.cpp and
    transformers draw it). A plain causal mask where that is the same thing."""
    if n == 1:
        return None
    first = 0 if window is None else max(0, start - window + 1)
    if window is None or start + n - 1 - first < window:
        return "causal"  # the last query still sees the first key
    return SlidingWindow(window)


def attend(q: mx.array, keys: KV, values: KV, scale: float, mask: Mask, softcap: Optional[float] = None) -> mx.array:
    """softmax(q k^T * scale [+ mask]) v; q (B, nh, L, hd), keys and values (B, nkv, S, hd).

    With `softcap` (Gemma 2) the scores become cap * tanh(scores / cap) before the mask."""
    out = _through_kernel(q, keys, values, scale, mask, softcap)
    if out is not None:
        return out
    if isinstance(mask, SlidingWindow):
        mask = mask.array(q.shape[2], (keys.packed if isinstance(keys, QuantizedKV) else keys).shape[2])
    if isinstance(keys, QuantizedKV):
        return quantized_attention(q, keys, values, scale, mask, softcap)
    if softcap is not None:
        return capped_attention(q, keys, values, scale, mask, softcap)
    if mask == "causal" and compute_path.on_cpu():
        # A prefill block: the softmax's exps dominate on CPU (see fast_math).
        return fast_math.causal_attention(q, keys, values, scale)
    return mx.fast.scaled_dot_product_attention(q, keys, values, scale=scale, mask=mask)


def _through_kernel(q: mx.array, keys: KV, values: KV, scale: float, mask: Mask, softcap: Optional[float]):
    """The extension's one-primitive attention where it applies (see model.kernels.cache_attention), else None."""
    if isinstance(mask, mx.array) or not cache_attention.usable(q):
        return None
    window = mask.size if isinstance(mask, SlidingWindow) else 0
    causal = mask is not None
    if isinstance(keys, QuantizedKV):
        if not isinstance(values, QuantizedKV):
            return None
        k, v = tuple(keys[:3]), tuple(values[:3])
        return cache_attention.quantized_attention(q, k, v, keys.group_size, keys.bits, scale, causal, window, softcap)
    return cache_attention.attention(q, keys, values, scale, causal, window, softcap)


def _masked(scores: mx.array, mask: Mask) -> mx.array:
    """Scores (..., L, S) with hidden keys at the lowest value; "causal" aligns the last query with the last key."""
    if mask is None:
        return scores
    if isinstance(mask, str):
        L, S = scores.shape[-2:]
        mask = mx.arange(S - L, S)[:, None] >= mx.arange(S)[None, :]
    return mx.where(mask, scores, mx.finfo(scores.dtype).min)


def capped_attention(q: mx.array, keys: mx.array, values: mx.array, scale: float, mask: Mask, softcap: float):
    """Attention written out, since the fused kernel cannot cap the scores (Gemma 2)."""
    B, n_heads, L, D = q.shape
    n_kv = keys.shape[1]
    repeats = n_heads // n_kv
    q = (q * scale).reshape(B, n_kv, repeats, L, D)
    scores = q @ keys[:, :, None].swapaxes(-1, -2)  # (B, nkv, repeats, L, S)
    scores = _masked(mx.tanh(scores / softcap) * softcap, mask)
    out = mx.softmax(scores, axis=-1, precise=True) @ values[:, :, None]
    return out.reshape(B, n_heads, L, D)


def quantized_attention(
    q: mx.array, keys: QuantizedKV, values: QuantizedKV, scale: float, mask: Mask, softcap: Optional[float] = None
) -> mx.array:
    """Attention with k and v quantized, by `quantized_matmul`: the full-precision cache is never materialised.

    Grouped-query heads by reshaping, so each key/value head meets its query heads in one product."""
    B, n_heads, L, D = q.shape
    n_kv = keys.packed.shape[1]
    repeats = n_heads // n_kv
    k, v = keys[:3], values[:3]
    q = q * scale
    if repeats > 1:
        q = q.reshape(B, n_kv, repeats, L, D)
        k = tuple(x[:, :, None] for x in k)
        v = tuple(x[:, :, None] for x in v)
    scores = mx.quantized_matmul(q, *k, transpose=True, group_size=keys.group_size, bits=keys.bits)  # (..., L, S)
    if softcap is not None:
        scores = mx.tanh(scores / softcap) * softcap
    scores = _masked(scores, mask)
    weights = mx.softmax(scores, axis=-1, precise=True)
    out = mx.quantized_matmul(weights, *v, transpose=False, group_size=values.group_size, bits=values.bits)
    return out.reshape(B, n_heads, L, D)


def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    if compute_path.on_cpu():
        return fast_math.swiglu(gate, up)
    return gate * mx.sigmoid(gate) * up


def geglu(gate: mx.array, up: mx.array) -> mx.array:
    """Gemma's gate: GELU in its tanh approximation (`gelu_pytorch_tanh`), times up."""
    return nn.gelu_approx(gate) * up
