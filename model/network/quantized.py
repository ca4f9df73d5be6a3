"""MLX's quantized layers, with few-row inputs on the CPU sent to the SIMD matvec kernel.

A decode step multiplies one row by every weight matrix: that goes through
`model.kernels.qmv` when it is available. Prefill's many rows go through a
GEMM on the dequantized weights (one layer at a time), which BLAS runs far
faster than MLX's CPU `quantized_matmul` does; on a GPU both stay MLX's own.
"""

from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map_with_path

from model import compute_path
from model.kernels import qmv


def _dequantized(layer) -> mx.array:
    """The layer's float32 weights: the kernel's one-pass dequantize when it knows the layout
    (~30x faster than mx.dequantize's chain of ops on CPU), else mx.dequantize; the same numbers."""
    w, scales, biases = layer["weight"], layer["scales"], layer["biases"]
    if qmv.extension() is not None and qmv.fits(layer):
        return qmv.extension().dequantize(w, scales, biases, layer.group_size, layer.bits)
    return mx.dequantize(w, scales, biases, group_size=layer.group_size, bits=layer.bits)


def _kernel_or_gemm(x: mx.array, layer) -> Optional[mx.array]:
    """x @ W.T by the kernel (few rows) or a GEMM on the CPU; None: leave it to MLX."""
    if qmv.applies(x, layer):
        return qmv.matvec(x, layer)
    rows = x.size // max(x.shape[-1], 1)
    if rows > qmv.MAX_ROWS and compute_path.on_cpu() and x.dtype == layer["scales"].dtype == mx.float32:
        # One layer's weights at a time, so the float copy is transient.
        return x @ _dequantized(layer).T
    return None


class QuantizedLinear(nn.QuantizedLinear):
    def __call__(self, x: mx.array) -> mx.array:
        y = _kernel_or_gemm(x, self)
        if y is None:
            return super().__call__(x)
        return y + self["bias"] if "bias" in self else y


class QuantizedEmbedding(nn.QuantizedEmbedding):
    def as_linear(self, x: mx.array) -> mx.array:
        """The tied output head: logits through the quantized embedding table."""
        y = _kernel_or_gemm(x, self)
        return super().as_linear(x) if y is None else y


def matvec_path(model: nn.Module) -> str:
    """How this model's decode-step matrix-vector products run, for model info."""
    quantized = [m for m in model.modules() if isinstance(m, (QuantizedLinear, QuantizedEmbedding))]
    if not quantized:
        return "BLAS on unquantized weights" if compute_path.on_cpu() else "MLX matmul"
    if compute_path.on_gpu():
        return "MLX quantized_matmul"
    path = qmv.describe()
    if qmv.extension() is not None and not all(qmv.fits(m) for m in quantized):
        path += "; other layouts: MLX quantized_matmul"
    return path


def quantize(model: nn.Module, groups: dict[str, dict]) -> None:
    """Replace every Linear and Embedding named in `groups` (path -> {group_size, bits}) in place."""

    def swap(path, module):
        q = groups.get(path)
        if q is None:
            return module
        if isinstance(module, nn.Linear):
            out_dims, in_dims = module.weight.shape
            return QuantizedLinear(in_dims, out_dims, "bias" in module, q["group_size"], q["bits"])
        if isinstance(module, nn.Embedding):
            return QuantizedEmbedding(*module.weight.shape, q["group_size"], q["bits"])
        return module

    model.update_modules(tree_map_with_path(swap, model.leaf_modules(), is_leaf=nn.Module.is_module))
