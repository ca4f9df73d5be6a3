"""The numbers the engine reports are the numbers defined in the README, and true."""

import json
import math

import pytest
from cli_helpers import glasschat

from model.runtime.headless import HeadlessSession
from model.runtime.settings import EngineOptions


@pytest.fixture(scope="module")
def first_turn(golden_greedy):
    session = HeadlessSession(EngineOptions(max_tokens=24))
    result = session.turn(golden_greedy[0]["user"])
    yield session, result
    session.close()


def test_prefill_numbers(first_turn, golden_greedy):
    _, r = first_turn
    p = r.prefill.stats
    assert p.prompt_tokens == len(golden_greedy[0]["prompt_ids"]) and p.reused_tokens == 0
    assert p.prefill_s > 0
    assert math.isclose(p.prefill_tok_s, p.prompt_tokens / p.prefill_s, rel_tol=1e-9)
    assert r.ended.stats.prefill_s == p.prefill_s


def test_decode_numbers(first_turn):
    _, r = first_turn
    s = r.ended.stats
    assert s.generated_tokens == len(r.tokens) == len(r.ended.token_ids)
    assert s.decode_s > 0
    assert math.isclose(s.decode_tok_s, (s.generated_tokens - 1) / s.decode_s, rel_tol=1e-9)
    assert [t.index for t in r.tokens] == list(range(len(r.tokens)))


def test_cache_numbers_match_the_arrays(first_turn):
    session, r = first_turn
    service = session.engine.core.service
    cache = service.cache
    state = r.ended.cache
    assert state.bytes == sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert state.tokens == cache.length == len(service.history)
    assert state.bytes_full == state.capacity * cache.bytes_per_token()


def test_top_k_is_the_model_distribution(first_turn, golden_greedy):
    _, r = first_turn
    for step, golden in zip(r.tokens, golden_greedy[0]["top5_logprobs"]):
        probs = [t.prob for t in step.top_k]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-5
        assert len(step.top_k) == 10
        # Greedy: the sampled token is the top one, and its probability is the one shown.
        assert step.token_id == step.top_k[0].id and step.prob == step.top_k[0].prob
        for shown, (gid, glp) in zip(step.top_k[:3], golden[:3]):
            assert shown.id == gid
            assert abs(shown.prob - math.exp(glp)) < 0.02


def test_run_json_has_every_key(golden_greedy):
    proc = glasschat("run", golden_greedy[0]["user"], "--json", "--max-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in (
        "text",
        "token_ids",
        "prompt_tokens",
        "prefill_s",
        "prefill_tok_s",
        "generated_tokens",
        "decode_tok_s",
        "stop_reason",
        "model",
        "cache",
        "top_k",
    ):
        assert key in out
    assert {"tokens", "capacity", "bytes"} <= set(out["cache"])
    assert len(out["top_k"]) == out["generated_tokens"]
    assert out["text"] == "The capital of France is Paris."
    assert out["stop_reason"] == "stop"
