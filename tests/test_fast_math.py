"""The CPU fast paths agree with MLX's own kernels."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from model.loading.config import ModelConfig
from model.network import fast_math
from model.network.rope import RoPE
from model.runtime.sampling import log_softmax


def test_exp_relative_error():
    x = mx.concatenate([mx.linspace(-80, 80, 20001), mx.array([0.0, 1.0, -1.0])])
    expected = np.exp(np.array(x, dtype=np.float64))
    got = np.array(fast_math.exp(x), dtype=np.float64)
    assert np.max(np.abs(got - expected) / expected) < 5e-6
    assert fast_math.exp(mx.array([-math.inf])).item() < 1e-37


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
