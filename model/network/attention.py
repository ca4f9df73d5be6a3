"""Scaled dot-product attention over what a cache returns: plain keys and values, or quantized ones.

Every attention the model computes goes through `attend`, so the cache only
stores and fetches, and the probe (see `probe`) sees the very arrays used.
"""

from typing import NamedTuple, Optional, Union

import mlx.core as mx

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


def on_cpu() -> bool:
    return mx.default_device() == mx.cpu


def attend(q: mx.array, keys: KV, values: KV, scale: float, mask: Optional[str]) -> mx.array:
    """softmax(q k^T * scale [+ causal mask]) v; q (B, nh, L, hd), keys and values (B, nkv, S, hd)."""
    if isinstance(keys, QuantizedKV):
        return quantized_attention(q, keys, values, scale, mask)
    if mask == "causal" and on_cpu():
        # A prefill block: the softmax's exps dominate on CPU (see fast_math).
        return fast_math.causal_attention(q, keys, values, scale)
    return mx.fast.scaled_dot_product_attention(q, keys, values, scale=scale, mask=mask)


def quantized_attention(
    q: mx.array, keys: QuantizedKV, values: QuantizedKV, scale: float, mask: Optional[str]
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
    if mask == "causal":
        S = scores.shape[-1]
        visible = mx.arange(S - L, S)[:, None] >= mx.arange(S)[None, :]
        scores = mx.where(visible, scores, mx.finfo(scores.dtype).min)
    weights = mx.softmax(scores, axis=-1, precise=True)
    out = mx.quantized_matmul(weights, *v, transpose=False, group_size=values.group_size, bits=values.bits)
    return out.reshape(B, n_heads, L, D)


def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    if on_cpu():
        return fast_math.swiglu(gate, up)
    return gate * mx.sigmoid(gate) * up
