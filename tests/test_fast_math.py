"""The CPU fast paths agree with MLX's own kernels."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from model.network import fast_math
from model.network.config import ModelConfig
from model.network.fast_math import log_softmax
from model.network.rope import RoPE


def test_exp_relative_error():
    lowest = fast_math.FLUSH_BELOW * math.log(2)  # about -69.3
    x = mx.concatenate([mx.linspace(lowest + 1e-3, 80, 20001), mx.array([0.0, 1.0, -1.0])])
    expected = np.exp(np.array(x, dtype=np.float64))
    got = np.array(fast_math.exp(x), dtype=np.float64)
    assert np.max(np.abs(got - expected) / expected) < 5e-6
    # Below 2^-100 it is exactly 0 (numpy says under 8e-31 there).
    below = mx.array([-math.inf, -1000.0, -88.0, lowest - 0.01])
    assert np.array(fast_math.exp(below)).tolist() == [0.0] * 4 and np.exp(lowest - 0.01) < 8e-31


def test_softmax_weights_are_never_subnormal():
    """A masked score's weight is 0, not a subnormal float: x86 multiplies those ~50x slower (prefill's weights @ v)."""
    q, k, v = mx.random.normal((1, 9, 64, 64)), mx.random.normal((1, 3, 64, 64)), mx.random.normal((1, 3, 64, 64))
    scores = (q * 0.125).reshape(1, 3, 3 * 64, 64) @ k.swapaxes(-1, -2)
    visible = mx.arange(64)[:, None] >= mx.arange(64)[None, :]
    masked = mx.where(visible, scores.reshape(1, 3, 3, 64, 64), -mx.inf)
    weights = np.array(fast_math.softmax(masked))
    tiny = np.finfo(np.float32).tiny  # the smallest normal float
    assert not np.any((weights != 0) & (np.abs(weights) < tiny))
    assert np.all(weights[..., ~np.array(visible)] == 0) and np.allclose(weights.sum(-1), 1, atol=1e-6)
    np.testing.assert_allclose(
        np.array(fast_math.causal_attention(q, k, v, 0.125)),
        np.array(mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125, mask="causal")),
        atol=1e-5,
    )


def test_swiglu_matches_silu():
    g, u = mx.random.normal((4, 1536)) * 6, mx.random.normal((4, 1536))
    assert mx.abs(fast_math.swiglu(g, u) - nn.silu(g) * u).max().item() < 1e-5


@pytest.mark.parametrize("new,old", [(1, 0), (7, 0), (16, 40), (64, 3)])
def test_causal_attention_matches_sdpa(new, old):
    q = mx.random.normal((1, 9, new, 64))
    k, v = mx.random.normal((1, 3, old + new, 64)), mx.random.normal((1, 3, old + new, 64))
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125, mask="causal")
    assert mx.abs(fast_math.causal_attention(q, k, v, 0.125) - expected).max().item() < 1e-5


def test_log_softmax_matches_mlx():
    logits = mx.random.normal((49152,)) * 5
    assert mx.abs(log_softmax(logits) - (logits - mx.logsumexp(logits))).max().item() < 1e-4


@pytest.mark.parametrize("traditional", [True, False])
@pytest.mark.parametrize(
    "scaling",
    [
        None,
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ],
)
def test_decode_rope_table_matches_fast_rope(traditional, scaling):
    config = ModelConfig(
        "llama", 64, 1, 4, 2, 64, 128, 10, rope_theta=100000.0, rope_traditional=traditional, rope_scaling=scaling
    )
    rope = RoPE(config)
    x = mx.random.normal((1, 4, 1, 64))
    for position in (0, 1, 100, 2047):
        expected = mx.fast.rope(
            x, 64, traditional=traditional, base=rope.base, scale=rope.scale, offset=position, freqs=rope._periods
        )
        # fast.rope computes its angles in float32; the table in float64.
        assert mx.abs(rope(x, position) - expected).max().item() < 5e-4
