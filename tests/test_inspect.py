"""The inside view's numbers are true: attention, logit lens, token chips and the cache grid."""

import json

import mlx.core as mx
import numpy as np
import pytest
from cli_helpers import glasschat
from engine_harness import SyncChat

from model.cache.settings import CacheSettings
from model.loading.chat_template import Message, encode_conversation
from model.network.probe import Probe, explicit_attention
from model.runtime.inspect import cache_grid, fresh_cache, inspect_prompt, step_inside

PROMPT = "The cat sat on the unbelievable mat."


@pytest.fixture(scope="module")
def inspected(default_model):
    return inspect_prompt(default_model, PROMPT, layer=3)


def test_tokens_are_the_tokenizer_output(default_model, inspected):
    ids, _ = encode_conversation(default_model.template, default_model.tokenizer, [Message("user", PROMPT)], True)
    assert inspected["tokens"]["ids"] == ids
    assert inspected["tokens"]["pieces"] == [default_model.tokenizer.piece(i) for i in ids]


def test_attention_rows_sum_to_one(inspected):
    n = len(inspected["tokens"]["ids"])
    for row in inspected["attention"]:
        assert len(row) == n and abs(sum(row) - 1.0) < 1e-4
    heads = inspected["attention_heads"]["weights"]
    assert all(abs(sum(h) - 1.0) < 1e-4 for h in heads)
    assert np.allclose(np.mean(heads, axis=0), inspected["attention"][3], atol=1e-6)


def test_layer0_attention_matches_softmax_computed_from_scratch(default_model):
    model, tok = default_model.model, default_model.tokenizer
    ids = tok.encode_text(PROMPT)
    inside = step_inside(model, fresh_cache(default_model, 256), ids, layers=[0])
    block = model.model.layers[0]
    h = block.input_layernorm(model.model.embed_tokens(mx.array([ids])))
    q, k, _ = block.self_attn.project(h)
    q = model.rope(q.reshape(1, len(ids), 9, 64).transpose(0, 2, 1, 3), 0)
    k = model.rope(k.reshape(1, len(ids), 3, 64).transpose(0, 2, 1, 3), 0)
    q, k = np.array(q[0, :, -1, :]), np.repeat(np.array(k[0]), 3, axis=0)  # (9, 64), (9, S, 64)
    scores = np.einsum("hd,hsd->hs", q, k) / 8.0
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    assert np.allclose(np.array(inside.attention[0]), expected, atol=1e-4)


def test_weights_reproduce_each_layers_attention_output(default_model):
    """In every layer, the explicit weights times V give the output the fused kernel gave."""
    model = default_model.model
    ids = default_model.tokenizer.encode_text(PROMPT)
    cache = fresh_cache(default_model, 256)
    prefill_ids, last = ids[:-1], ids[-1:]
    from model.runtime.generate import prefill

    prefill(model, cache, prefill_ids)
    probe = Probe(attention_layers=range(30))
    model(mx.array([last]), cache, probe=probe)
    checks = []
    for i, seen in sorted(probe.attention.items()):
        keys, values = cache.layers[i].stored(cache.length)  # what the cache holds now, the new token included
        weights = explicit_attention(seen.q, keys, seen.scale)  # (nh, S)
        manual = weights[:, None, :] @ mx.repeat(values, 3, axis=1)[0]  # (nh, 1, hd)
        checks.append(mx.abs(manual[:, 0, :] - seen.out[0, :, -1, :]).max().item())
    assert len(checks) == 30 and max(checks) < 1e-4


def test_logit_lens_last_layer_is_the_models_distribution(default_model):
    inside = step_inside(
        default_model.model, fresh_cache(default_model, 256), default_model.tokenizer.encode_text(PROMPT), layers=[]
    )
    own = mx.softmax(inside.logits.astype(mx.float32), axis=-1)
    assert len(inside.lens) == 30
    assert mx.abs(inside.lens[-1] - own).max().item() < 1e-6


def test_grid_counts_equal_the_cache_counters():
    run = SyncChat(max_tokens=24, cache=CacheSettings(max_kv_size=96))
    for q in ["Name a planet.", "Name an ocean.", "Name a river.", "Name a mountain.", "Name a city."]:
        run.turn(q)
    cache, history = run.cache, run.service.history
    assert cache.evicted_total > 0
    grid = cache_grid(len(history), cache, new_tokens=1)
    assert grid.count("sink") == cache.keep
    assert grid.count("evicted") + grid.count("evicted_last") == cache.evicted_total
    assert grid.count("evicted_last") == cache.last_evicted
    assert grid.count("sink") + grid.count("held") + grid.count("new") == cache.length
    assert len(cache_grid(len(history), cache, 1, buckets=40)) <= 40


def test_inspect_command_json():
    proc = glasschat("inspect", PROMPT, "--json", "--layer", "2")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in ("tokens", "attention", "logit_lens", "top_k", "cache", "first_generated"):
        assert key in out
    assert len(out["logit_lens"]) == 30 and len(out["logit_lens"][0]) == 5
    assert out["top_k"][0][0] == out["first_generated"]["token"][0]
