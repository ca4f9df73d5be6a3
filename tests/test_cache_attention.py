"""The attention kernel (model/kernels/attention_*) against float64 numpy, and against MLX's own ops.

softmax(q k^T * scale, soft-capped, masked) v is recomputed here in float64 from
the same numbers (a quantized cache dequantized by `mx.dequantize`), for: one-row
decode steps and verify passes of up to 8 rows (the decode path, split over blocks
of keys), prefill chunks (the blocked path), 1 to 4,096 keys, a sliding window,
soft-capping, float32 and 8/4-bit keys and values, 9 query heads over 3 kv heads,
keys read through a cache-like strided view, every kernel this CPU runs (AVX-512,
AVX2, the generic build) on 1 and 2 threads. The model's `attend` must give what
MLX's own path gives, and the model with a rotating cache (a sink, evictions)
must too.
"""

import mlx.core as mx
import numpy as np
import pytest

from model.kernels import cache_attention
from model.network import attention as network_attention
from model.network.attention import QuantizedKV, SlidingWindow, attend

try:  # the module itself: a kernel that fails to load must fail here, not skip
    from model.kernels import _qmv as ext
except ImportError:
    ext = None
pytestmark = pytest.mark.skipif(
    ext is None or ext.built_for_mlx != mx.__version__ or not hasattr(ext, "attention"),
    reason="the kernel extension is not built for this mlx",
)

HEADS, KV_HEADS, HEAD_DIM, SCALE = 9, 3, 64, 0.125
# Float32 sums against float64: inputs are unit normals, outputs averages of them.
TOLERANCE = 2e-5


def reference(q, keys, values, causal: bool, window: int, softcap: float) -> np.ndarray:
    """The float64 answer: q (B, H, L, D) over keys and values (B, KV, S, D)."""
    q, k, v = (np.array(a, dtype=np.float64) for a in (q, keys, values))
    L, S = q.shape[2], k.shape[2]
    group = q.shape[1] // k.shape[1]
    scores = np.einsum("bhld,bhsd->bhls", q, np.repeat(k, group, axis=1)) * SCALE
    if softcap:
        scores = softcap * np.tanh(scores / softcap)
    position = (S - L + np.arange(L))[:, None]
    key = np.arange(S)[None, :]
    visible = np.ones((L, S), dtype=bool)
    if causal:
        visible &= key <= position
    if window:
        visible &= position - key < window
    scores = np.where(visible, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights @ np.repeat(v, group, axis=1)


def random_cache(rng, S: int, kv: str, offset: int = 7):
    """Keys and values as a cache hands them over: a slice of a longer buffer, float or quantized."""
    shape = (1, KV_HEADS, S + offset + 5, HEAD_DIM)
    keys, values = (mx.array(rng.standard_normal(shape).astype(np.float32)) for _ in range(2))
    keys = keys * 2.0  # sharper softmaxes than unit scores give
    if kv == "float32":
        keys, values = keys[..., offset : offset + S, :], values[..., offset : offset + S, :]
        return keys, values, keys, values
    bits = int(kv[1:])
    sides = []
    for full in (keys, values):
        triple = tuple(x[..., offset : offset + S, :] for x in mx.quantize(full, group_size=32, bits=bits))
        sides.append(QuantizedKV(*triple, 32, bits))
    plain = [network_attention.plain(side) for side in sides]
    return sides[0], sides[1], plain[0], plain[1]


def run_kernel(q, keys, values, causal: bool, window: int, softcap: float) -> np.ndarray:
    if isinstance(keys, QuantizedKV):
        out = ext.quantized_attention(q, *keys[:3], *values[:3], 32, keys.bits, SCALE, softcap, causal, window)
    else:
        out = ext.attention(q, keys, values, SCALE, softcap, causal, window)
    return np.array(out, dtype=np.float64)


@pytest.fixture
def each_kernel():
    """Yields (kernel name, threads): the best kernel on 1 and 2 threads (split over blocks of keys and
    rows), every other kernel this CPU runs on 1; restores the defaults after."""
    threads = ext.attention_threads()
    names = ext.attention_kernel_names()

    def every():
        for name, n in [(names[0], 1), (names[0], 2), *((other, 1) for other in names[1:])]:
            ext.set_attention_kernel(name)
            ext.set_attention_threads(n)
            yield name, n

    yield every
    ext.set_attention_kernel("best")
    ext.set_attention_threads(threads)


def check_all(each_kernel, q, keys, values, want, causal, window, softcap):
    for name, threads in each_kernel():
        got = run_kernel(q, keys, values, causal, window, softcap)
        error = np.abs(got - want).max()
        assert error < TOLERANCE, f"{name} on {threads} threads: {error:.2e}"


@pytest.mark.parametrize("kv", ["float32", "q8", "q4"])
@pytest.mark.parametrize("rows", [1, 2, 5, 8])
def test_decode_and_verify_rows_match_float64(each_kernel, kv, rows):
    """One-row steps and verify passes: causal within the new rows, the rest of the cache before them."""
    rng = np.random.default_rng(100 * rows + len(kv))
    for S in sorted({rows, 33, 700, 4096 if rows in (1, 8) else 1500}):
        keys, values, plain_k, plain_v = random_cache(rng, S, kv)
        q = mx.array(rng.standard_normal((1, HEADS, rows, HEAD_DIM)).astype(np.float32))
        for window, softcap in ((0, 0.0), (100, 0.0), (0, 30.0), (S // 2 + 1, 20.0)):
            want = reference(q, plain_k, plain_v, True, window, softcap)
            check_all(each_kernel, q, keys, values, want, True, window, softcap)


@pytest.mark.parametrize("kv", ["float32", "q8", "q4"])
def test_one_key_and_no_mask(each_kernel, kv):
    """The first token of a chat (one key), and a step with no mask at all (every key visible)."""
    rng = np.random.default_rng(3)
    for S, rows in ((1, 1), (300, 1), (300, 4)):
        keys, values, plain_k, plain_v = random_cache(rng, S, kv)
        q = mx.array(rng.standard_normal((1, HEADS, rows, HEAD_DIM)).astype(np.float32))
        check_all(each_kernel, q, keys, values, reference(q, plain_k, plain_v, False, 0, 0.0), False, 0, 0.0)


@pytest.mark.parametrize("kv", ["float32", "q8", "q4"])
def test_blocked_prefill_matches_float64(each_kernel, kv):
    """Prefill chunks: a first chunk (S = L), a later one over the cache, rows not a multiple of the row block."""
    rng = np.random.default_rng(len(kv))
    for rows, S in ((9, 9), (57, 57), (57, 400), (256, 1100)):
        keys, values, plain_k, plain_v = random_cache(rng, S, kv)
        q = mx.array(rng.standard_normal((1, HEADS, rows, HEAD_DIM)).astype(np.float32))
        for window, softcap in ((0, 0.0), (40, 0.0), (0, 30.0), (100, 20.0)):
            want = reference(q, plain_k, plain_v, True, window, softcap)
            check_all(each_kernel, q, keys, values, want, True, window, softcap)


def test_strided_queries_and_odd_head_size(each_kernel):
    """q as a transposed view (as the model makes it), and a head size that is no multiple of a vector."""
    rng = np.random.default_rng(11)
    for D in (80, 96):
        for rows, S in ((1, 500), (3, 70), (20, 90)):
            q = mx.array(rng.standard_normal((1, rows, HEADS, D)).astype(np.float32)).transpose(0, 2, 1, 3)
            keys = mx.array(rng.standard_normal((1, KV_HEADS, S, D)).astype(np.float32))
            values = mx.array(rng.standard_normal((1, KV_HEADS, S, D)).astype(np.float32))
            want = reference(q, keys, values, True, 0, 0.0)
            check_all(each_kernel, q, keys, values, want, True, 0, 0.0)


def mlx_path(q, keys, values, mask, softcap, monkeypatch):
    """What `attend` gives without the kernel (MLX's own ops)."""
    with monkeypatch.context() as patch:
        patch.setattr(cache_attention, "usable", lambda q: False)
        return attend(q, keys, values, SCALE, mask, softcap)


@pytest.mark.parametrize("kv", ["float32", "q8", "q4"])
def test_attend_takes_the_kernel_and_agrees_with_mlx(kv, monkeypatch):
    """The model's `attend` runs the kernel on the CPU, and gives what MLX's ops give, every mask it passes."""
    rng = np.random.default_rng(5)
    for rows, S, mask, softcap in (
        (1, 600, None, None),
        (4, 600, "causal", None),
        (256, 700, "causal", None),
        (64, 64, "causal", 50.0),
        (30, 200, SlidingWindow(50), None),
    ):
        keys, values, _, _ = random_cache(rng, S, kv)
        q = mx.array(rng.standard_normal((1, HEADS, rows, HEAD_DIM)).astype(np.float32))
        out = attend(q, keys, values, SCALE, mask, softcap)
        assert "CacheAttention" in graph_ops(out)
        expected = mlx_path(q, keys, values, mask, softcap, monkeypatch)
        assert "CacheAttention" not in graph_ops(expected)
        assert mx.abs(out - expected).max().item() < 5e-5, (rows, S, mask)


def graph_ops(a: mx.array) -> str:
    """The names of the operations that compute `a` (before it is evaluated)."""
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".dot") as f:
        mx.export_to_dot(f.name, a)
        return f.read()


def test_sliding_window_array_is_the_windowed_causal_mask():
    """SlidingWindow's boolean form (MLX's path) is the mask the kernel applies: causal and `size` back."""
    got = np.array(SlidingWindow(3).array(4, 6))
    want = np.array(
        [
            [1, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 1, 1, 1],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(got, want)


def test_cache_attention_rejects_what_it_cannot_take():
    q = mx.zeros((1, 9, 1, 64))
    with pytest.raises(ValueError, match="multiple of kv heads"):
        ext.attention(q, mx.zeros((1, 2, 5, 64)), mx.zeros((1, 2, 5, 64)), 1.0)
    with pytest.raises(ValueError, match="head sizes differ"):
        ext.attention(q, mx.zeros((1, 3, 5, 32)), mx.zeros((1, 3, 5, 32)), 1.0)
    with pytest.raises(ValueError, match="window needs causal"):
        ext.attention(q, mx.zeros((1, 3, 5, 64)), mx.zeros((1, 3, 5, 64)), 1.0, 0.0, False, 4)
