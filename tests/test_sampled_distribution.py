"""The distribution the engine samples from, at temperature > 0, against numpy from the raw logits.

README ("What the numbers mean"): the top-k shown is "the distribution actually
sampled from (after repetition penalty, temperature, top-k, top-p and min-p,
renormalised)". Here the real engine answers with each filter on; the raw
logits of every step are recomputed by one fresh forward pass over the prompt
and the reply so far, and numpy applies the README's rules to them:

- repetition penalty (CTRL): a seen token's logit is divided by the penalty if
  positive, multiplied if negative; "seen" is the last 64 tokens the model read;
- temperature: logits / T, then softmax;
- top-k, top-p and min-p each pick a set from that tempered distribution (top-p:
  the most likely tokens until their mass reaches p, the one crossing p included;
  min-p: tokens with at least min_p times the top probability), and the tokens
  in every set are kept, renormalised (mlx-lm's rule when filters are combined).

Then a seeded draw test: many draws through the same `draw` the decoder uses
must land on each token as often as the probabilities shown say.

Both code paths (tests/code_paths.py), with the same bounds: the distribution is float32 on
each, through our exp and softmax on the cpu path and MLX's logsumexp on the gpu path
(both within 4e-6 relative of exp). The cpu path runs the real model; the gpu path runs the
tiny random model that speaks its vocabulary, since MLX's CPU quantized matmul on the
default model's float16 scales takes ~0.4 s a token here: the rules under test are the
sampler's, and they see the same 49,152-token vocabulary.
"""

from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest
from engine_harness import SyncChat
from ui_helpers import fake_app, text_of, wait_for

from chat.widgets.transcript import AssistantMessage
from model.runtime.events import ModelReady, TokenGenerated
from model.runtime.generate import sample_step
from model.runtime.sampling import draw, sampling_distribution
from model.runtime.settings import SamplingSettings

PROMPT = "Write two lines about the sea."
SETTINGS = {
    "top-k": SamplingSettings(temperature=0.8, top_k=5, seed=1),
    "top-p": SamplingSettings(temperature=0.9, top_p=0.6, seed=2),
    "min-p": SamplingSettings(temperature=1.0, min_p=0.1, seed=3),
    "repetition penalty": SamplingSettings(temperature=0.7, repetition_penalty=1.5, seed=4),
    "all together": SamplingSettings(temperature=1.2, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.3, seed=5),
}
# Fresh logits differ from the engine's cached ones by ~1e-4: a step where a filter's
# cut falls closer than this (in tempered logits, or in mass for top-p) is not judged.
MARGIN = 2e-3


def numpy_distribution(logits: np.ndarray, s: SamplingSettings, recent: list[int]):
    """(probabilities, whether a filter's cut falls within MARGIN of a token the others keep), in float64."""
    x = logits.astype(np.float64).copy()
    if s.repetition_penalty != 1.0 and recent:
        seen = np.unique(recent)
        x[seen] = np.where(x[seen] > 0, x[seen] / s.repetition_penalty, x[seen] * s.repetition_penalty)
    x = x / s.temperature
    p = np.exp(x - x.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    filters = []  # (kept, near the cut) per filter, over the vocabulary
    if s.top_k:
        kept = np.zeros_like(p, dtype=bool)
        kept[order[: s.top_k]] = True
        near = np.zeros_like(kept)
        near[order[s.top_k - 1 : s.top_k + 1]] = x[order[s.top_k - 1]] - x[order[s.top_k]] < MARGIN
        filters.append((kept, near))
    if s.top_p < 1.0:
        before = np.empty_like(p)
        before[order] = np.cumsum(p[order]) - p[order]  # mass of the tokens more likely than each
        filters.append((before < s.top_p, np.abs(before - s.top_p) < MARGIN))
    if s.min_p > 0.0:
        gap = x - x.max() - np.log(s.min_p)
        filters.append((gap >= 0, np.abs(gap) < MARGIN))
    keep = np.logical_and.reduce([k for k, _ in filters]) if filters else np.ones_like(p, dtype=bool)
    close = any(
        (near & np.logical_and.reduce([k for j, (k, _) in enumerate(filters) if j != i] or [True])).any()
        for i, (_, near) in enumerate(filters)
    )
    p = np.where(keep, p, 0.0)
    return p / p.sum(), close


@pytest.fixture(scope="module")
def peaked_tiny_model(tmp_path_factory, default_gguf_path):
    """The tiny model with a real model's spread of logits, so the filters' cuts fall clear of tokens."""
    from tiny_models import write_tiny_chat_folder

    return str(write_tiny_chat_folder(tmp_path_factory.mktemp("peaked"), default_gguf_path, logit_scale=4.0))


@pytest.fixture(scope="module")
def engine(module_code_path, peaked_tiny_model):
    engine = SyncChat(max_tokens=8, model=None if module_code_path == "cpu" else peaked_tiny_model)
    assert engine.loaded.info()["compute_path"] == module_code_path
    return engine


@pytest.mark.parametrize("name", list(SETTINGS))
def test_shown_distribution_is_the_one_numpy_computes_from_the_raw_logits(engine, name):
    settings = SETTINGS[name]
    engine.update(sampling=settings)
    engine.reset(None)
    start = len(engine.events)
    engine.turn(PROMPT)
    steps = [e for e in engine.events[start:] if isinstance(e, TokenGenerated)]
    prompt = engine.service.history[: len(engine.service.history) - (len(steps) - 1)]
    sequence = prompt + [s.token_id for s in steps]
    # One fresh forward pass gives the logits that predicted every reply token.
    logits = np.array(engine.model(mx.array([sequence[:-1]]))[0, len(prompt) - 1 :].astype(mx.float32))
    judged = 0
    for i, step in enumerate(steps):
        recent = sequence[: len(prompt) + i][-settings.repetition_window :]
        p, close = numpy_distribution(logits[i], settings, recent)
        assert p[step.token_id] > 0, f"step {i}: sampled token {step.token_id} is outside the distribution"
        if close:
            continue
        judged += 1
        shown = {t.id: t.prob for t in step.top_k}
        top = np.argsort(-p, kind="stable")[: len(step.top_k)]
        assert {int(t) for t in top if p[t] > MARGIN} == {i for i, q in shown.items() if q > MARGIN}, f"step {i}"
        for token_id, prob in shown.items():
            assert abs(prob - p[token_id]) < 5e-3 * max(prob, 0.1), f"step {i}: token {token_id}"
        assert abs(step.prob - p[step.token_id]) < 5e-3 * max(step.prob, 0.1)
    assert judged >= len(steps) // 2, f"only {judged} of {len(steps)} steps were clear of a filter's edge"
    if settings.top_k:
        assert all(sum(t.prob > 0 for t in step.top_k) <= settings.top_k for step in steps)


def test_draws_land_as_often_as_the_shown_probabilities_say(engine):
    """2,000 seeded draws from one real step's distribution; chi-square against the probabilities shown.

    The seed is fixed, so the outcome is too: this cannot flake. Its power: a
    draw from the same distribution at temperature 0.8 instead of 1 scored 35.
    """
    settings = SamplingSettings(temperature=1.0, top_k=8, seed=0)
    tok = engine.tokenizer()
    ids = tok.encode_text("My favourite colour is")
    logits = engine.model(mx.array([ids]))[0, -1]
    recent = mx.array(ids, dtype=mx.int32)
    _, _, top_ids, top_probs = sample_step(logits, settings, None, recent, 10)  # what the panel shows
    shown = dict(zip(top_ids.tolist(), top_probs.tolist()))
    logprobs = sampling_distribution(logits, settings, recent)
    key, n = mx.random.key(1234), 2000
    counts: dict[int, int] = {}
    for _ in range(n):
        key, sub = mx.random.split(key)  # as `decode` splits its key per step
        token = draw(logprobs, settings, sub).item()
        counts[token] = counts.get(token, 0) + 1
    assert set(counts) <= {i for i, p in shown.items() if p > 0}  # never outside the top 8
    categories = [i for i, p in shown.items() if p > 0]
    expected = np.array([shown[i] * n for i in categories])
    observed = np.array([counts.get(i, 0) for i in categories])
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    # 7 degrees of freedom: 24.3 is the 0.1% critical value.
    assert chi2 < 24.3, (chi2, dict(zip(categories, observed)), expected)


def test_greedy_shows_the_temperature_1_distribution(engine):
    """At temperature 0 the pick is the argmax and the panel shows softmax(logits), unfiltered."""
    engine.update(sampling=replace(SETTINGS["top-k"], temperature=0.0))
    engine.reset(None)
    start = len(engine.events)
    engine.turn(PROMPT)
    steps = [e for e in engine.events[start:] if isinstance(e, TokenGenerated)]
    prompt = engine.service.history[: len(engine.service.history) - (len(steps) - 1)]
    sequence = prompt + [s.token_id for s in steps]
    logits = np.array(engine.model(mx.array([sequence[:-1]]))[0, len(prompt) - 1 :].astype(mx.float32), np.float64)
    for i, step in enumerate(steps):
        p = np.exp(logits[i] - logits[i].max())
        p /= p.sum()
        assert step.token_id == step.top_k[0].id
        assert sum(t.prob > 0 for t in step.top_k) == len(step.top_k) > 5  # top-k 5 is not applied
        for t in step.top_k:
            assert abs(t.prob - p[t.id]) < 5e-3 * max(t.prob, 0.1)


def test_the_panel_header_says_which_distribution():
    assert SamplingSettings().distribution_label() == "model distribution (T=1); greedy pick"
    label = SETTINGS["all together"].distribution_label()
    assert label == "sampled distribution (T=1.2, top-k 20, top-p 0.9, min-p 0.05)"


@pytest.mark.asyncio
async def test_the_top_k_panel_shows_the_label_the_engine_sent():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        sent = next(e for e in holder["engine"].load_events if isinstance(e, ModelReady)).distribution
        assert sent == "model distribution (T=1); greedy pick"
        app.query_one("#prompt").insert("Hello.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.query(AssistantMessage) and not app.chat.busy)
        assert sent in text_of(app.chat.panels["topk"])  # above the step's candidates
