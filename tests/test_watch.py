"""Watched decode steps (the attention and logit-lens views) show the model's true numbers.

Each watched step is checked against the same step recomputed from scratch on
a fresh cache: attention through `inspect.step_inside` (itself checked against
numpy in test_inspect), the lens's last layer against the model's own logits.
Watching must not change what the model writes.
"""

import mlx.core as mx
import numpy as np
import pytest
from engine_harness import SyncChat
from tiny_models import build_tiny_model

from model.internals.needs import StepNeeds
from model.internals.watch import StepWatcher, read_inside, top_by_argmax
from model.runtime.events import InsideStep
from model.runtime.inspect import fresh_cache, step_inside

QUESTION = "What is the capital of France?"
LAYER = 7


@pytest.fixture(scope="module")
def watched():
    run = SyncChat(max_tokens=12, layout="float32")
    run.set_needs(StepNeeds(top_k=10, attention_layer=LAYER, lens_layers=(), interval_s=0.0))
    started, tokens, ended = run.turn(QUESTION)
    inside = [e for e in run.events if isinstance(e, InsideStep)]
    fed = run.service.history  # every token fed, the reply included
    return run, tokens, ended, inside, fed


def test_every_step_after_the_first_is_watched_when_asked(watched):
    _, tokens, _, inside, _ = watched
    # The first token comes from prefill's last forward pass, which is not watched.
    assert [e.index for e in inside] == [t.index for t in tokens[1:]]


def test_attention_rows_sum_to_one_and_cover_the_cache(watched):
    run, tokens, _, inside, _ = watched
    n_heads = run.model.config.num_attention_heads
    prompt_len = len(run.service.history) - (len(tokens) - 1)
    for e in inside:
        assert e.layer == LAYER and len(e.attention) == n_heads
        assert np.allclose(e.attention_mean, np.mean(np.array(e.attention), axis=0), atol=1e-6)
        for row in e.attention:
            # The query of token index-1 sees the prompt and the reply before it, itself included.
            assert len(row) == prompt_len + e.index
            assert abs(sum(row) - 1.0) < 1e-4


def test_attention_matches_a_fresh_recomputation(watched, default_model):
    _, _, _, inside, fed = watched
    prompt_len = len(inside[0].attention[0]) - inside[0].index
    for e in (inside[0], inside[len(inside) // 2], inside[-1]):
        ids = fed[: prompt_len + e.index]
        fresh = step_inside(default_model.model, fresh_cache(default_model, 512), ids, layers=[LAYER])
        assert np.allclose(np.array(e.attention), np.array(fresh.attention[LAYER]), atol=1e-4)


def test_most_attended_names_the_right_tokens(watched, default_model):
    _, _, _, inside, fed = watched
    tok = default_model.tokenizer
    for e in inside:
        mean = np.mean(np.array(e.attention), axis=0)
        assert [a.position for a in e.most_attended] == list(np.argsort(-mean, kind="stable")[: len(e.most_attended)])
        for a in e.most_attended:
            assert a.text == tok.piece(fed[a.position]) and abs(a.weight - mean[a.position]) < 1e-6


def test_lens_last_layer_is_the_models_own_distribution(watched, default_model):
    _, tokens, _, inside, fed = watched
    layers = default_model.config.num_hidden_layers
    prompt_len = len(inside[0].attention[0]) - inside[0].index
    for e in (inside[0], inside[-1]):
        assert e.lens_layers == tuple(range(layers)) and len(e.lens) == layers and all(len(row) == 3 for row in e.lens)
        ids = fed[: prompt_len + e.index]
        fresh = step_inside(default_model.model, fresh_cache(default_model, 512), ids, layers=[])
        probs = np.array(mx.softmax(fresh.logits.astype(mx.float32), axis=-1))
        top = np.argsort(-probs)[:3]
        assert [t.id for t in e.lens[-1]] == list(top)
        assert np.allclose([t.prob for t in e.lens[-1]], probs[top], atol=1e-4)
        # Greedy decoding: the lens's top token at the last layer is the token written next.
        assert e.lens[-1][0].id == tokens[e.index].token_id
        # Every layer's candidates are sorted, most likely first.
        assert all(row[0].prob >= row[-1].prob for row in e.lens)


def test_watching_does_not_change_the_reply(watched):
    _, tokens, ended, _, _ = watched
    plain = SyncChat(max_tokens=12, layout="float32")
    _, plain_tokens, plain_ended = plain.turn(QUESTION)
    assert plain_ended.token_ids == ended.token_ids
    assert np.allclose([t.prob for t in plain_tokens], [t.prob for t in tokens], atol=1e-5)


def test_a_closed_view_watches_nothing(watched):
    run = watched[0]
    run.set_needs(StepNeeds(top_k=10))
    start = len(run.events)
    run.turn("And of Italy?")
    assert not [e for e in run.events[start:] if isinstance(e, InsideStep)]


def test_watcher_waits_its_interval():
    model = build_tiny_model("llama3")
    cache = fresh_cache_of(model)
    clock = [0.0]
    watcher = StepWatcher(model, cache, now=lambda: clock[0])
    needs = StepNeeds(lens_layers=(), interval_s=0.2)
    seen = []
    mx.eval(model(mx.array([[1, 2, 3]]), cache))
    for t in (0.0, 0.1, 0.19, 0.2, 0.3, 0.45):
        clock[0] = t
        _, extras = watcher.forward(mx.array([[4]]), needs)
        seen.append(extras is not None)
    assert seen == [True, False, False, True, False, True]


def fresh_cache_of(model):
    from model.cache.kv_cache import KVCache

    return KVCache(model.config, 64, model.rope.shift)


def test_lens_of_chosen_layers_matches_the_full_lens(default_model):
    model, tok = default_model.model, default_model.tokenizer
    ids = tok.encode_text("The capital of France is")
    results = {}
    for layers in ((), (0, 10, 20)):
        cache = fresh_cache(default_model, 64)
        mx.eval(model(mx.array([ids[:-1]]), cache))
        watcher = StepWatcher(model, cache)
        logits, extras = watcher.forward(mx.array([ids[-1:]]), StepNeeds(lens_layers=layers, interval_s=0.0))
        mx.eval(logits, *[v for v in extras.values() if isinstance(v, mx.array)])
        results[layers] = (logits, read_inside(extras))
    full, part = results[()][1], results[(0, 10, 20)][1]
    assert part.lens_layers == (0, 10, 20, 29)  # the last layer always comes along
    for row, layer in zip(part.lens_ids, part.lens_layers):
        assert row == full.lens_ids[layer]
    assert np.allclose(part.lens_probs, [full.lens_probs[i] for i in part.lens_layers], atol=1e-5)
    # The step's own logits are the same whichever rows shared the head call.
    assert np.allclose(np.array(results[()][0]), np.array(results[(0, 10, 20)][0]), atol=1e-4)


def test_top_by_argmax_is_a_sorted_top_k():
    x = mx.array(np.random.default_rng(0).normal(size=(4, 1000)).astype(np.float32))
    ids, values = top_by_argmax(x, 3)
    expected = np.argsort(-np.array(x), axis=-1)[:, :3]
    assert (np.array(ids) == expected).all()
    assert np.allclose(np.array(values), np.exp(np.take_along_axis(np.array(x), expected, axis=-1)))


def test_needs_change_mid_reply_at_the_next_step(watched):
    """What the views need is one value the engine reads at every step: a top-k closed mid-reply stops there."""
    run = watched[0]
    run.set_needs(StepNeeds(top_k=10))
    run.on_token = lambda event: event.index == 3 and run.set_needs(StepNeeds(top_k=0, lens_layers=()))
    start = len(run.events)
    try:
        _, tokens, _ = run.turn("And of Spain?")
    finally:
        run.on_token = None
    inside = [e for e in run.events[start:] if isinstance(e, InsideStep)]
    # Token n+1 is sampled before token n is reported, so the change shows from index 5.
    assert [len(t.top_k) for t in tokens[:5]] == [10] * 5 and all(t.top_k == () for t in tokens[5:])
    assert len(tokens) > 6 and inside and min(e.index for e in inside) == 5
