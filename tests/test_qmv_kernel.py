"""The SIMD quantized matvec against mx.dequantize + matmul in float64 numpy.

Every kernel this CPU can run (AVX-512, AVX2 or NEON, and the portable scalar
one) is checked, on 1 and 2 threads, for 4 and 8 bits and group sizes 32, 64
and 128, with output counts that are not multiples of any SIMD width and
input sizes with an odd number of 32-blocks.

The kernel quantizes its input to int16 per block of 32 (scale d = max|x| / 32767),
so it is exact only when the inputs are. The bound each output must meet,
computed from the data, is the sum of:
  - input rounding: |x_i - d q_i| <= d / 2 (0.51 d, for the float32 rounding
    of x / d), times the weight's code and scale: sum_g |s_g| sum_i (0.51 d_b) q_i;
  - the reference's own rounding: mx.dequantize rounds s q + b to float32
    (2 roundings of 2^-24), times |x_i|;
  - float32 accumulation in the kernel: each term passes through at most
    G + K/32 + 16 roundings (group sums, block products, lane sums), a
    relative 2^-24 each, of the terms' magnitudes sum_i (|s_g| q_i + |b_g|) |x_i|.
Where the arithmetic allows it (integer inputs whose blocks peak at exactly
32767, power-of-two scales, integer biases), the result is bit-exact.
"""

import mlx.core as mx
import numpy as np
import pytest

try:  # the module itself, not `qmv.extension()`: a kernel failing its self-check must fail here, not skip
    from model.kernels import _qmv as ext
except ImportError:
    ext = None
pytestmark = pytest.mark.skipif(
    ext is None or ext.built_for_mlx != mx.__version__, reason="the SIMD kernel is not built for this mlx"
)

EPS32 = 2.0**-24


def kernels() -> list[str]:
    """Every kernel this CPU runs (e.g. avx512, avx2 and scalar), not just the one in use."""
    return ext.kernel_names() if ext else ["scalar"]


@pytest.fixture
def use_kernel():
    """Run with a named kernel and thread count (one row or several); restores the defaults after."""
    threads, passes = ext.threads(), ext.pass_threads()

    def use(name: str, n_threads: int):
        ext.set_kernel(name)
        ext.set_threads(n_threads)
        ext.set_pass_threads(n_threads)

    yield use
    ext.set_kernel("best")
    ext.set_threads(threads)
    ext.set_pass_threads(passes)


def codes_of(w: mx.array, bits: int) -> np.ndarray:
    """Unpack MLX's layout in numpy: lowest bits first within each uint32."""
    packed = np.array(w).view(np.uint8)
    if bits == 8:
        return packed.astype(np.int64)
    return np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(packed.shape[0], -1).astype(np.int64)


def pack(codes: np.ndarray, bits: int) -> mx.array:
    codes = codes.astype(np.uint8)
    if bits == 4:
        codes = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return mx.array(np.ascontiguousarray(codes).view(np.uint32))


def bound(x: np.ndarray, codes: np.ndarray, scales: np.ndarray, biases: np.ndarray, group_size: int) -> np.ndarray:
    """Per-output error bound (M, N), as the module docstring derives it."""
    M, K = x.shape
    d = np.abs(x.reshape(M, K // 32, 32)).max(axis=-1) / 32767.0  # (M, blocks)
    d_each = np.repeat(d, 32, axis=1)  # (M, K)
    s_each = np.repeat(np.abs(scales), group_size, axis=1)  # (N, K)
    b_each = np.repeat(np.abs(biases), group_size, axis=1)
    rounding = (0.51 * d_each) @ (s_each * codes).T
    magnitude = np.abs(x) @ (s_each * codes + b_each).T
    roundings = group_size + K // 32 + 16
    return rounding + (2 + roundings) * EPS32 * magnitude * 1.01


def reference(x, w, scales, biases, group_size, bits) -> np.ndarray:
    W = np.array(mx.dequantize(w, scales, biases, group_size=group_size, bits=bits), dtype=np.float64)
    return np.array(x, dtype=np.float64) @ W.T


SHAPES = {  # group size -> (N, K) pairs: odd N; K with an odd number of 32-blocks where G allows
    # (K/32 = 3, 5, 11, 18: every remainder of the AVX-512 kernel's 4-block steps)
    32: [(1, 96), (5, 160), (13, 352), (77, 576), (300, 96)],
    64: [(7, 192), (129, 576), (300, 128)],
    128: [(5, 384), (77, 640), (300, 128)],
}


@pytest.mark.parametrize("rows", range(1, 9))
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("bits", [4, 8])
def test_within_bound_of_float64_reference(use_kernel, bits, group_size, rows):
    rng = np.random.default_rng(1000 * bits + 10 * group_size + rows)
    for N, K in SHAPES[group_size]:
        W = mx.array(rng.standard_normal((N, K)).astype(np.float32) * 0.05)
        w, scales, biases = mx.quantize(W, group_size=group_size, bits=bits)
        # Activations of an LLM: mostly small, a few large outliers.
        x_np = rng.standard_normal((rows, K)).astype(np.float32)
        x_np[:, rng.integers(0, K, 3)] *= 20.0
        x = mx.array(x_np)
        want = reference(x, w, scales, biases, group_size, bits)
        limit = bound(x_np.astype(np.float64), codes_of(w, bits), np.array(scales), np.array(biases), group_size)
        for name in kernels():
            for threads in (1, 2):
                use_kernel(name, threads)
                got = np.array(ext.quantized_matvec(x, w, scales, biases, group_size, bits), dtype=np.float64)
                excess = np.abs(got - want) - limit
                assert excess.max() <= 0, f"{name}, {threads} threads, N={N} K={K}: {excess.max():.3g} over the bound"


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("bits", [4, 8])
def test_bit_exact_where_the_arithmetic_is(use_kernel, bits, group_size):
    rng = np.random.default_rng(bits + group_size)
    rows, N, K = 5, 67, 640 if group_size == 128 else 352 if group_size == 32 else 448
    codes = rng.integers(0, 2**bits, (N, K))
    scales = 2.0 ** rng.integers(0, 3, (N, K // group_size))
    biases = rng.integers(-8, 9, (N, K // group_size)).astype(np.float64)
    # Small integer inputs; each block peaks at exactly 32767 (so its scale is 1),
    # at a position whose codes are zero, keeping every partial sum under 2^24.
    x = rng.integers(-20, 21, (rows, K)).astype(np.float64)
    peaks = np.arange(0, K, 32) + rng.integers(0, 32, K // 32)
    x[:, peaks] = rng.choice([-32767.0, 32767.0], (rows, len(peaks)))
    codes[:, peaks] = 0
    w, s, b = pack(codes, bits), mx.array(scales.astype(np.float32)), mx.array(biases.astype(np.float32))
    # Our reading of the layout is MLX's.
    W = np.repeat(scales, group_size, axis=1) * codes + np.repeat(biases, group_size, axis=1)
    assert np.array_equal(np.array(mx.dequantize(w, s, b, group_size=group_size, bits=bits)), W)
    want = x @ W.T
    for name in kernels():
        for threads in (1, 2):
            use_kernel(name, threads)
            got = np.array(ext.quantized_matvec(mx.array(x.astype(np.float32)), w, s, b, group_size, bits))
            assert np.array_equal(got.astype(np.float64), want), f"{name}, {threads} threads"


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("bits", [4, 8])
def test_dequantize_is_mx_dequantize(use_kernel, bits, group_size):
    """Prefill's weights: the same float32 numbers as mx.dequantize, bit for bit."""
    rng = np.random.default_rng(bits * group_size)
    for N in (1, 77, 300):
        w, scales, biases = mx.quantize(mx.array(rng.standard_normal((N, 640)).astype(np.float32)), group_size, bits)
        want = np.array(mx.dequantize(w, scales, biases, group_size=group_size, bits=bits))
        for name in kernels():
            for threads in (1, 2):
                use_kernel(name, threads)
                got = np.array(ext.dequantize(w, scales, biases, group_size, bits))
                assert np.array_equal(got, want), f"{name}, {threads} threads, N={N}"


@pytest.mark.parametrize("bits", [4, 8])
def test_inputs_round_to_nearest(use_kernel, bits):
    """Weights that pick one input each read back the input's int16 code times its block scale.

    Expected in float32 as the kernel computes it: d = max|x| / 32767, code = rint(x * (32767 / max|x|))."""
    rng = np.random.default_rng(bits)
    K = 160
    block_sizes = rng.choice([0.01, 1.0, 300.0], (3, K // 32)).repeat(32, axis=1)  # blocks of very different scales
    x = (rng.standard_normal((3, K)) * block_sizes).astype(np.float32)
    picks = pack(np.eye(K, dtype=np.int64), bits)
    ones, zeros = mx.ones((K, K // 32)), mx.zeros((K, K // 32))
    top = np.abs(x.reshape(3, K // 32, 32)).max(axis=-1).repeat(32, axis=1)  # float32
    codes = np.rint(x * (np.float32(32767) / top))
    want = (top / np.float32(32767)) * codes  # float32 throughout
    for name in kernels():
        use_kernel(name, 1)
        got = np.array(ext.quantized_matvec(mx.array(x), picks, ones, zeros, 32, bits))
        assert np.array_equal(got, want), name


@pytest.mark.parametrize("bits", [4, 8])
def test_rows_threads_and_strides_do_not_change_a_result(use_kernel, bits):
    """Each output row is computed the same way whatever else is in the call."""
    rng = np.random.default_rng(bits)
    K, N = 576, 1000
    w, scales, biases = mx.quantize(mx.array(rng.standard_normal((N, K)).astype(np.float32)), group_size=32, bits=bits)
    x = mx.array(rng.standard_normal((8, K)).astype(np.float32))
    use_kernel(ext.kernel_name(), 1)
    alone = [np.array(ext.quantized_matvec(x[r : r + 1], w, scales, biases, 32, bits)) for r in range(8)]
    for threads in (1, 2, 3):
        use_kernel("best", threads)
        together = np.array(ext.quantized_matvec(x, w, scales, biases, 32, bits))
        assert np.array_equal(together, np.concatenate(alone)), f"{threads} threads"
    # A transposed view (not row-contiguous) and a batch axis give the same numbers.
    strided = mx.array(np.array(x).T.copy()).T
    assert np.array_equal(np.array(ext.quantized_matvec(strided, w, scales, biases, 32, bits)), np.concatenate(alone))
    batched = ext.quantized_matvec(x.reshape(2, 4, K), w, scales, biases, 32, bits)
    assert batched.shape == (2, 4, N)
    assert np.array_equal(np.array(batched).reshape(8, N), np.concatenate(alone))


def test_more_than_eight_rows_are_done_in_passes():
    rng = np.random.default_rng(3)
    w, scales, biases = mx.quantize(mx.array(rng.standard_normal((50, 128)).astype(np.float32)), group_size=64, bits=4)
    x = mx.array(rng.standard_normal((19, 128)).astype(np.float32))
    got = np.array(ext.quantized_matvec(x, w, scales, biases, 64, 4))
    rows = [np.array(ext.quantized_matvec(x[r : r + 1], w, scales, biases, 64, 4)) for r in range(19)]
    assert np.array_equal(got, np.concatenate(rows))


def test_rejects_what_it_cannot_do():
    w, scales, biases = mx.quantize(mx.zeros((8, 64)), group_size=32, bits=4)
    x = mx.zeros((1, 64))
    with pytest.raises(ValueError, match="last axis"):
        ext.quantized_matvec(mx.zeros((1, 32)), w, scales, biases, 32, 4)
    with pytest.raises(ValueError, match="float32"):
        ext.quantized_matvec(x.astype(mx.float16), w, scales, biases, 32, 4)
    with pytest.raises(ValueError, match="bits"):
        ext.quantized_matvec(x, w, scales, biases, 32, 3)
    with pytest.raises(ValueError, match="scales"):
        ext.quantized_matvec(x, w, scales[:, :1], biases, 32, 4)
