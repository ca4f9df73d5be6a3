"""The rotating cache: exact attention after wrapping, flat memory, sane positions, cancel and reuse."""

import mlx.core as mx
import numpy as np
import pytest
from engine_harness import SyncChat
from tiny_models import build_tiny_model

from model.cache.kv_cache import KVCache
from model.cache.kv_quantized import QuantizedKVCache
from model.cache.settings import CacheSettings
from model.network.probe import Probe
from model.runtime.generate import prefill


def held(history, cache):
    return history[: cache.keep] + history[cache.keep + cache.evicted_total :]


def attention_reference(q, keys, values, scale):
    """softmax(q k^T * scale) v in numpy, heads repeated for grouped-query attention."""
    q, keys, values = (np.array(x.astype(mx.float32)) for x in (q, keys, values))
    repeats = q.shape[1] // keys.shape[1]
    keys, values = np.repeat(keys, repeats, axis=1), np.repeat(values, repeats, axis=1)
    scores = q @ keys.swapaxes(-1, -2) * scale
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    return (scores / scores.sum(-1, keepdims=True)) @ values


def check_next_step_attention(model, cache, token, tolerance):
    """Run one decode step; every layer's output must equal attention recomputed from what the cache holds."""
    probe = Probe(attention_layers=range(len(cache.layers)))
    model(mx.array([[token]]), cache, probe=probe)
    assert len(probe.attention) == len(cache.layers)
    for i, seen in probe.attention.items():
        keys, values = cache.layers[i].stored(cache.length)  # the new token included
        assert keys.shape[2] == cache.length
        reference = attention_reference(seen.q, keys, values, seen.scale)
        np.testing.assert_allclose(np.array(seen.out), reference, atol=tolerance)


def check_layer0_keys_at_design_positions(model, cache, held_ids, tolerance):
    """Layer 0's keys depend only on token and position: recompute them fresh at 0..n-1."""
    attn = model.model.layers[0].self_attn
    h = model.model.layers[0].input_layernorm(model.model.embed_tokens(mx.array([held_ids])))
    k = attn.project(h)[1].reshape(1, len(held_ids), attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    fresh = model.rope(k, 0)
    stored, _ = cache.layers[0].stored(cache.length)
    stored, fresh = np.array(stored), np.array(fresh)
    assert stored.shape == fresh.shape
    relative = np.linalg.norm(stored - fresh) / np.linalg.norm(fresh)
    assert relative < tolerance, relative


def wrap_tiny(cache_class, **kw):
    model = build_tiny_model("llama3", hidden_size=128)  # head_dim 32: a quantization group
    cache = cache_class(model.config, capacity=48, shift_keys=model.rope.shift, keep=5, **kw)
    history = []
    rng = np.random.default_rng(0)
    # Prefills of several sizes and single-token decodes, alternating, as turns do.
    for size in [20, 1, 1, 13, 1, 30, 1, 1, 1, 7, 40, 1, 1, 1, 1, 25, 1]:
        ids = rng.integers(0, 96, size).tolist()
        if size == 1:
            model(mx.array([ids]), cache)
        else:
            prefill(model, cache, ids, chunk_size=16)
        history += ids
    assert cache.evicted_total > 2 * cache.capacity  # wrapped several times
    return model, cache, history


def test_tiny_model_attention_is_exact_after_wrapping():
    model, cache, history = wrap_tiny(KVCache)
    check_layer0_keys_at_design_positions(model, cache, held(history, cache), 1e-6)
    check_next_step_attention(model, cache, 3, 1e-4)


def test_tiny_model_quantized_cache_attention_after_wrapping():
    model, cache, history = wrap_tiny(QuantizedKVCache, bits=8)
    # 8-bit rounding, redone at each eviction a key survives: about 1% of its norm.
    check_layer0_keys_at_design_positions(model, cache, held(history, cache), 0.02)
    check_next_step_attention(model, cache, 3, 1e-3)  # reference uses the same dequantized values


@pytest.fixture(scope="module")
def wrapped_default():
    # float32 pinned: with the CPU's default 4-bit weights, decode steps round their inputs to int16
    # (the SIMD kernel) while a prefill runs a float GEMM, ~5e-3 apart in logits; this checks the cache.
    run = SyncChat(max_tokens=24, cache=CacheSettings(max_kv_size=96), layout="float32")
    questions = [
        "Name a planet.",
        "What is water made of?",
        "Say hello in French.",
        "Count to five.",
        "What colour is the sky?",
        "Give me a fruit.",
        "What is 2+2?",
        "Name an ocean.",
        "Name a mountain.",
        "What do cats eat?",
    ]
    for q in questions:
        run.turn(q)
    return run


def test_default_model_attention_is_exact_after_wrapping(wrapped_default):
    run = wrapped_default
    assert run.cache.evicted_total > 2 * run.cache.capacity
    check_layer0_keys_at_design_positions(run.model, run.cache, run.service.held_ids(), 1e-5)
    check_next_step_attention(run.model, run.cache, 504, 1e-4)
