"""Scaled dot-product attention: MLX's fused kernel, or on CPU for prefill blocks our faster exp path."""

import mlx.core as mx

from model.network import fast_math


def on_cpu() -> bool:
    return mx.default_device() == mx.cpu


def attend(q: mx.array, k: mx.array, v: mx.array, scale: float, mask) -> mx.array:
    """softmax(q k^T * scale [+ causal mask]) v; q (B, nh, L, hd), k and v (B, nkv, S, hd)."""
    if mask == "causal" and on_cpu():
        # A prefill block: the softmax's exps dominate on CPU (see fast_math).
        return fast_math.causal_attention(q, k, v, scale)
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    if on_cpu():
        return fast_math.swiglu(gate, up)
    return gate * mx.sigmoid(gate) * up
