"""The logit lens and the most-attended names, against the float64 numpy reference.

README (views 2 and 3): the logit lens reads each block's output "through the
final norm and the output head, as if the model stopped there", and the
attention view names "the most attended tokens". Here the lens of every layer
is recomputed in numpy from the hidden states of a from-scratch forward pass,
and after evictions each named token is identified independently: a layer-0 key
depends only on the token and its position, so the key the cache holds at a
named position must be the one numpy computes for the named token there.
"""

import numpy as np
import pytest
from engine_harness import SyncChat
from numpy_reference import Reference, read_gguf, rms_norm, rope, softmax

from model.cache.settings import CacheSettings
from model.internals.needs import StepNeeds
from model.internals.watch import Inside
from model.runtime.events import InsideStep, TokenGenerated
from model.runtime.inside_event import inside_step


@pytest.fixture(scope="module")
def gguf(default_gguf_path):
    return read_gguf(default_gguf_path)


@pytest.fixture(scope="module")
def run():
    """One engine for the module: a 64-token cache, the attention (layer 5) and lens views open."""
    run = SyncChat(max_tokens=8, cache=CacheSettings(max_kv_size=64))
    run.set_needs(StepNeeds(top_k=10, attention_layer=5, lens_layers=(), interval_s=0.0))
    return run


def test_lens_of_every_layer_is_norm_and_head_of_a_from_scratch_forward(run, gguf):
    _, tokens, _ = run.turn("What is the capital of France?")
    assert run.cache.evicted_total == 0
    inside = [e for e in run.events if isinstance(e, InsideStep)]
    fed = run.service.history  # the prompt and every reply token but the last
    prompt_len = len(fed) - (len(tokens) - 1)
    weights, spec = gguf
    ref = Reference(weights, spec, capacity=len(fed), keep=0)
    hidden = ref.step(fed).hidden  # per layer: (positions, hidden), computed from scratch in float64
    assert len(inside) == len(tokens) - 1 >= 4
    # Every (step, layer) row through the final norm and the head at once: one read of the table.
    rows = [(e, layer, shown) for e in inside for layer, shown in zip(e.lens_layers, e.lens)]
    positions = [prompt_len + e.index - 1 for e, _, _ in rows]  # the query whose next token the step predicted
    logits = ref.head(np.stack([hidden[layer][p] for (_, layer, _), p in zip(rows, positions)]))
    for (e, layer, shown), probs in zip(rows, softmax(logits)):
        assert e.lens_layers == tuple(range(spec.layers))
        top = np.argsort(-probs)[: len(shown)]
        for t in shown:
            assert abs(t.prob - probs[t.id]) < 1e-3, (e.index, layer, t)
        # The same candidates, unless two are too close to call.
        clear = np.diff(probs[top]) < -1e-3
        assert all(t.id == int(i) for t, i, c in zip(shown, top, [True, *clear]) if c), (e.index, layer)


def layer0_key(weights, spec, token: int, position: int) -> np.ndarray:
    """What any cache must hold in layer 0 for `token` at `position`: (kv_heads, head_dim)."""
    embedded = weights["model.embed_tokens.weight"][token].astype(np.float64)
    h = rms_norm(embedded, weights["model.layers.0.input_layernorm.weight"], spec.eps)
    k = h @ weights["model.layers.0.self_attn.k_proj.weight"].T.astype(np.float64)
    return rope(k.reshape(spec.kv_heads, 1, -1), np.array([position]), spec)[:, 0, :]


def test_most_attended_names_after_evictions(run, gguf):
    weights, spec = gguf
    run.set_needs(StepNeeds(top_k=10, attention_layer=5, interval_s=0.0))
    tok = run.tokenizer()
    checked = []

    def check(event):
        if not isinstance(event, InsideStep):
            return
        positions = len(event.attention_mean)
        assert len(event.most_attended) == min(8, positions)  # always named, never silently dropped
        cache = run.cache
        if cache.length not in (positions, positions + 1):
            return  # the token fed ahead evicted: the positions have moved since this step
        ids = set(run.service.history) | {e.token_id for e in run.events if isinstance(e, TokenGenerated)}
        by_piece = {tok.piece(i): i for i in ids}
        held, _ = cache.layers[0].stored(positions)
        held = np.array(held[0])  # (kv_heads, positions, head_dim)
        for a in event.most_attended:
            expected = layer0_key(weights, spec, by_piece[a.text], a.position)
            error = np.linalg.norm(held[:, a.position] - expected) / np.linalg.norm(expected)
            assert error < 1e-4, (a, error)
        checked.append(cache.evicted_total)

    run.on_event = check
    try:
        for question in ["Name a planet.", "Name an ocean.", "Name a river.", "Name a mountain.", "Name a city."]:
            run.turn(question)
    finally:
        run.on_event = None
    assert run.cache.evicted_total > run.cache.capacity  # wrapped
    assert sum(evicted > 0 for evicted in checked) >= 15  # names checked after evictions (18 steps)


def test_a_cache_the_conversation_cannot_account_for_fails_loudly(run):
    """More positions attended than the conversation knows of: an error, not a view without names.

    On the engine thread the error becomes TurnFailed ("Internal error ...") and the cache is rebuilt."""
    weights = (0.5, 0.3, 0.2)
    inside = Inside(
        layer=5,
        attention=(weights,),
        attention_mean=weights,
        evicted_total=0,
        sink=1,
        lens_layers=(),
        lens_ids=(),
        lens_probs=(),
    )
    assert len(inside_step(1, 1, inside, [7, 8, 9], run.tokenizer()).most_attended) == 3
    with pytest.raises(RuntimeError, match="3 positions but holds 2 known tokens"):
        inside_step(1, 1, inside, [7, 8], run.tokenizer())
