"""The small ops of a decode step, fused by the kernel extension where it is built.

On the CPU, MLX builds `mx.fast.rms_norm` from ~10 generic ops, RoPE from a
table plus the split into heads from ~30 a layer, and the gate and the residual
adds are nodes of their own: a decode step of the default model was ~2,400 graph
nodes, each paying the CPU scheduler's fixed cost (10.3 ms of a 24.2 ms step,
measured at the last close). Here each is one node: an RMSNorm; q, k and v
split from the fused projection and turned by RoPE; and the MLP's gate and the
residual add folded into the SIMD matvec's product. Each function returns None
where its op does not apply (no extension, a GPU, a layout the kernel does not
take), and the caller then runs the ops it always ran.
"""

from typing import Optional

import mlx.core as mx

from model.kernels import qmv
from model.kernels.device import cpu_primitives

FUSED_ROWS = 8  # as the matvec kernel: a prefill chunk's ops are few and large already


def _extension():
    ext = qmv.extension()
    return ext if ext is not None and hasattr(ext, "rms_norm") and cpu_primitives() else None


def rms_norm(x: mx.array, weight: mx.array, eps: float) -> Optional[mx.array]:
    """x * rsqrt(mean(x^2) + eps) * weight over the last axis, in one node."""
    ext = _extension()
    if ext is None or x.dtype != mx.float32 or weight.dtype != mx.float32:
        return None
    return ext.rms_norm(x, weight, eps)


def rope_heads(qkv: mx.array, tables, offset: int, n_heads: int, n_kv_heads: int, head_dim: int, rope):
    """[q, k, v] (B, heads, L, hd) from the fused projection's output (B, L, ...), q and k turned by `rope`
    at positions offset.. from its cos/sin `tables`; None where this does not apply."""
    ext = _extension()
    if ext is None or qkv.dtype != mx.float32 or qkv.shape[1] > FUSED_ROWS or tables is None:
        return None
    cos, sin = tables
    return ext.rope_heads(qkv, cos, sin, offset, n_heads, n_kv_heads, head_dim, rope.dims, rope.traditional)


def _quantized_width(layer) -> Optional[int]:
    """The input size of a layer the matvec kernel takes (4/8-bit, its layouts, no bias), else None."""
    if not isinstance(getattr(layer, "bits", None), int) or "bias" in layer or not qmv.fits(layer):
        return None
    return layer["weight"].shape[1] * 32 // layer.bits


def _takes(x: mx.array, layer, inputs_per_feature: int = 1) -> bool:
    """Whether the matvec kernel takes x (few float32 rows) times `layer`'s weights."""
    width = _quantized_width(layer)
    rows = x.size // max(x.shape[-1], 1)
    return (
        width is not None
        and _extension() is not None
        and x.dtype == mx.float32
        and x.shape[-1] == inputs_per_feature * width
        and rows <= FUSED_ROWS
    )


def linear_plus(layer, x: mx.array, residual: mx.array) -> mx.array:
    """layer(x) + residual: one node through the matvec kernel where it takes the layer, else two."""
    if _takes(x, layer) and residual.dtype == mx.float32:
        return _extension().quantized_matvec(
            x, layer["weight"], layer["scales"], layer["biases"], layer.group_size, layer.bits, residual
        )
    return layer(x) + residual


def swiglu_linear_plus(layer, gate_up: mx.array, residual: Optional[mx.array]) -> Optional[mx.array]:
    """layer(silu(gate) * up) [+ residual] for gate_up = gate | up, in one node; None where the kernel
    does not take it (the caller then gates and multiplies as before)."""
    if not _takes(gate_up, layer, 2):
        return None
    if residual is not None and residual.dtype != mx.float32:
        return None
    return _extension().quantized_matvec(
        gate_up, layer["weight"], layer["scales"], layer["biases"], layer.group_size, layer.bits, residual, True
    )
