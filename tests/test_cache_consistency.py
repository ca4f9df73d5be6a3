"""Cached, chunked decoding gives the same logits as recomputing the whole sequence."""

import mlx.core as mx
import pytest
from tiny_models import build_tiny_model

from model.cache.kv_cache import KVCache
from model.runtime.generate import prefill


def cached_logits(model, ids, prompt_len, chunk):
    cache = KVCache(model.config, capacity=256, shift_keys=model.rope.shift)
    out = [prefill(model, cache, ids[:prompt_len], chunk_size=chunk)]
    for token in ids[prompt_len:]:
        out.append(model(mx.array([[token]]), cache)[0, -1])
    return mx.stack(out)  # logits after each of positions prompt_len-1 .. len-1


def full_logits(model, ids, prompt_len):
    return model(mx.array([ids]))[0, prompt_len - 1 :]


@pytest.mark.parametrize("chunk", [1, 8, 256])
def test_tiny_model(chunk):
    model = build_tiny_model("llama3")
    ids = [(5 * i + 1) % 96 for i in range(45)]
    diff = mx.abs(cached_logits(model, ids, 37, chunk) - full_logits(model, ids, 37)).max().item()
    assert diff < 1e-4


def test_default_model(default_model, golden_greedy):
    case = golden_greedy[1]
    ids = case["prompt_ids"] + case["greedy_ids"][:10]
    n = len(case["prompt_ids"])
    got = cached_logits(default_model.model, ids, n, chunk=16)
    expected = full_logits(default_model.model, ids, n)
    assert mx.abs(got - expected).max().item() < 2e-3
    assert mx.argmax(got, axis=-1).tolist() == mx.argmax(expected, axis=-1).tolist()
