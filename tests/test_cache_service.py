"""The cache service as another front end would drive it (an API server, say): ids in, steps out.

On a tiny random model with the default model's vocabulary. The references are computed
apart from the service: shared prefixes counted by hand, and every step's probabilities
and top-k from one uncached forward pass over the whole sequence (numpy's log-softmax).
"""

import mlx.core as mx
import numpy as np
import pytest

from model.cache.settings import CacheSettings
from model.internals.needs import StepNeeds
from model.loading.loader import load_model
from model.runtime.cache_service import CacheService
from model.runtime.settings import DecodeSettings, LookupSettings

SINK = 4
GREEDY = DecodeSettings(max_tokens=6, lookup=LookupSettings(enabled=False))


@pytest.fixture(scope="module")
def loaded(tiny_chat_model):
    return load_model(tiny_chat_model, "float32")


def generate(service, ids, settings=GREEDY, needs=StepNeeds(), cancelled=lambda: False):
    move = service.move(ids, SINK)
    steps = list(service.decode(move, settings, None, lambda: needs, cancelled))
    return move, steps


def test_the_longest_shared_prefix_is_kept_and_the_rest_prefilled(loaded):
    service = CacheService(loaded, CacheSettings(max_kv_size=256))
    first = list(range(100, 140))
    move, steps = generate(service, first)
    assert (move.reused, len(move.to_feed), move.rolled_back) == (0, 40, 0)
    # Another request sharing the first 30 ids: those are kept, the cache rolled back past them.
    second = first[:30] + [7, 8, 9, 10]
    move, _ = generate(service, second)
    assert (move.reused, move.to_feed, move.rolled_back) == (30, [7, 8, 9, 10], 40 + len(steps) - 1 - 30)
    assert service.cache.length == len(service.history) and service.history[:34] == second


def test_steps_carry_each_requests_own_settings(loaded):
    service = CacheService(loaded, CacheSettings(max_kv_size=256))
    prompt = list(range(200, 230))
    _, steps = generate(service, prompt, needs=StepNeeds(top_k=0))
    assert len(steps) == 6 and [s.finish_reason for s in steps] == [None] * 5 + ["length"]
    assert all(s.top_ids == () for s in steps)  # nothing asked, nothing computed
    # A stop of its own: the reply ends at that id, reported as "stop".
    stop = steps[2].token_id
    settings = DecodeSettings(max_tokens=6, lookup=LookupSettings(enabled=False), stop_ids=frozenset({stop}))
    _, stopped = generate(service, prompt, settings)
    assert [s.token_id for s in stopped] == [s.token_id for s in steps[:3]] and stopped[-1].finish_reason == "stop"
    # Top-k log-probabilities for the request, whatever the views ask: against one uncached pass.
    settings = DecodeSettings(max_tokens=4, lookup=LookupSettings(enabled=False), top_logprobs=5)
    _, scored = generate(service, prompt, settings, needs=StepNeeds(top_k=0))
    sequence = prompt + [s.token_id for s in scored]
    logits = np.array(loaded.model(mx.array([sequence[:-1]]))[0].astype(mx.float32), np.float64)
    for i, step in enumerate(scored):
        row = logits[len(prompt) - 1 + i]
        logprobs = row - row.max() - np.log(np.exp(row - row.max()).sum())
        best = np.argsort(-logprobs)[:5]
        assert list(step.top_ids) == best.tolist() and step.token_id == best[0]
        assert np.allclose(step.top_probs, np.exp(logprobs[best]), atol=1e-4)


def test_a_cancel_ends_the_reply_within_a_step_and_the_cache_holds_what_was_shown(loaded):
    service = CacheService(loaded, CacheSettings(max_kv_size=256))
    prompt = list(range(300, 320))
    shown = []
    settings = DecodeSettings(max_tokens=50, lookup=LookupSettings(enabled=False))
    move = service.move(prompt, SINK)
    for step in service.decode(move, settings, None, StepNeeds, lambda: len(shown) >= 3):
        shown.append(step)
    assert len(shown) == 4 and shown[-1].finish_reason == "cancelled"  # noticed on the step after the cancel
    assert service.history == prompt + [s.token_id for s in shown[:-1]] and service.cache.length == len(prompt) + 3


def test_a_consumer_that_stops_reading_leaves_the_cache_as_shown(loaded):
    service = CacheService(loaded, CacheSettings(max_kv_size=256))
    prompt = list(range(400, 420))
    steps = service.decode(service.move(prompt, SINK), GREEDY, None, StepNeeds)
    first, second = next(steps), next(steps)
    steps.close()  # a client gone: the token fed ahead is rolled back
    assert service.history == prompt + [first.token_id] and service.cache.length == len(prompt) + 1
    assert second.finish_reason is None
