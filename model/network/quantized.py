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


# A prefill GEMM dequantizes at most this many bytes of weights at a time. A whole matrix
# at once left Llama 3.2 1B's gate|up (16384 x 2048: 134 MB in float32) and its siblings
# in MLX's buffer cache: resident memory 507 MB over file + cache after a 512-token
# prefill. In row panels of ~16 MB, each evaluated before the next is built (MLX's CPU
# backend allocates a node's output when it queues it, so lazily the panels would all be
# allocated at once), one panel is alive at a time and the next reuses its buffer.
PANEL_BYTES = 16 << 20


def _dequantized_rows(layer, begin: int, end: int) -> mx.array:
    """Rows begin..end of the layer's float32 weights (rows are independent in the packed layout)."""
    w, scales, biases = (layer[name][begin:end] for name in ("weight", "scales", "biases"))
    if qmv.extension() is not None and qmv.fits(layer):
        return qmv.extension().dequantize(w, scales, biases, layer.group_size, layer.bits)
    return mx.dequantize(w, scales, biases, group_size=layer.group_size, bits=layer.bits)


def _gemm(x: mx.array, layer) -> mx.array:
    """x @ W.T on dequantized weights; a large W a panel of output rows at a time, each evaluated."""
    n, k = layer["weight"].shape[0], x.shape[-1]
    panel = max(64, PANEL_BYTES // (4 * k) // 64 * 64)
    if panel >= n:
        return x @ _dequantized(layer).T
    parts = []
    for r in range(0, n, panel):
        parts.append(x @ _dequantized_rows(layer, r, min(r + panel, n)).T)
        mx.eval(parts[-1])
    return mx.concatenate(parts, axis=-1)


def _kernel_or_gemm(x: mx.array, layer) -> Optional[mx.array]:
    """x @ W.T by the kernel (few rows) or a GEMM on the CPU; None: leave it to MLX."""
    if qmv.applies(x, layer):
        return qmv.matvec(x, layer)
    rows = x.size // max(x.shape[-1], 1)
    if rows > qmv.MAX_ROWS and compute_path.on_cpu() and x.dtype == layer["scales"].dtype == mx.float32:
        # One layer's weights at a time (and a panel of them at a time), so the float copy is transient.
        return _gemm(x, layer)
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
