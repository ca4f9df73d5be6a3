"""Fuse q, k, v into one projection and gate, up into another, in the checkpoint's tensors.

A decode step is a chain of small matrix-vector products; on every backend,
fewer, larger ones cost fewer dispatches (about 0.1 ms a layer on a 2-core
CPU for q, k, v). Rows of a weight are independent, so plain and quantized
weights (packed rows, scales, biases) fuse by concatenating along the output
axis. The loader does this before it builds the model, and builds it fused
only when every layer's parts are stored alike (a GGUF may mix quantization
types within a layer; those stay apart).
"""

from typing import Optional

import mlx.core as mx

# Fused module -> the checkpoint modules it replaces, in output order.
FUSED = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
}
_KINDS = ("weight", "scales", "biases", "bias")


def _alike(parts: list[dict[str, mx.array]]) -> bool:
    """Same tensors, dtypes and row shapes: then the rows can be stacked (and quantized the same way)."""
    first = parts[0]
    if not first:
        return False
    return all(
        p.keys() == first.keys()
        and all(p[k].dtype == first[k].dtype and p[k].shape[1:] == first[k].shape[1:] for k in first)
        for p in parts
    )


def fuse_weights(weights: dict[str, mx.array], n_layers: int) -> Optional[dict[str, mx.array]]:
    """The tensors with fused projections, or None if some layer's parts are stored differently."""
    out = dict(weights)
    for i in range(n_layers):
        prefix = f"model.layers.{i}."
        for fused, names in FUSED.items():
            parts = [
                {kind: weights[key] for kind in _KINDS if (key := f"{prefix}{name}.{kind}") in weights}
                for name in names
            ]
            if not _alike(parts):
                return None
            for kind in parts[0]:
                out[f"{prefix}{fused}.{kind}"] = mx.concatenate([p[kind] for p in parts], axis=0)
                for name in names:
                    del out[f"{prefix}{name}.{kind}"]
    return out
