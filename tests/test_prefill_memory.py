"""Prefill's GEMM on quantized weights dequantizes a panel of rows at a time, not the whole matrix.

The panels must give the whole matrix's product exactly (same dequantized numbers, the
same GEMM per output row), and hold MLX's peak memory to about one panel: Llama 3.2 1B's
gate|up alone is 134 MB in float32.
"""

import mlx.core as mx

from model.network import quantized
from model.network.quantized import QuantizedLinear


def layer(out_dims: int, in_dims: int) -> QuantizedLinear:
    linear = QuantizedLinear(in_dims, out_dims, False, 32, 4)
    weights = mx.random.normal((out_dims, in_dims), key=mx.random.key(0)) * 0.02
    linear.weight, linear.scales, linear.biases = mx.quantize(weights, group_size=32, bits=4)
    mx.eval(linear.parameters())
    return linear


def peak_of(f) -> tuple[mx.array, int]:
    mx.clear_cache()
    mx.reset_peak_memory()
    out = f()
    mx.eval(out)
    return out, mx.get_peak_memory()


def test_panels_give_the_whole_product_with_one_panel_alive(monkeypatch):
    monkeypatch.setattr(quantized, "PANEL_BYTES", 1 << 20)  # 1 MB panels: 512 rows of 512
    big = layer(4096, 512)  # 8 MB of float32 weights: 8 panels
    x = mx.random.normal((1, 64, 512), key=mx.random.key(1))
    mx.eval(x)
    whole, whole_peak = peak_of(lambda: x @ quantized._dequantized(big).T)
    panels, panel_peak = peak_of(lambda: quantized._gemm(x, big))
    assert mx.array_equal(whole, panels)
    weights = 4096 * 512 * 4
    assert whole_peak - panel_peak > weights // 2, (whole_peak, panel_peak)
    # The model's layer takes the panels for a prefill's rows, and the kernel for a decode step's.
    assert mx.array_equal(big(x), panels)
