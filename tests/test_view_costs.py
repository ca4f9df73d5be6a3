"""Closed views and a hidden top-k panel cost the real engine nothing per token: counted, not timed.

The MLX evaluations are counted too: a step with every view hidden asks for one (its
token), and a step the logit lens watches for one as well, its rows riding with the token.

README: "a closed one costs nothing per token" and "a hidden panel costs nothing
per token". The engine's per-step extras are the top-k of the sampling
distribution (`top_k_of`) and a probe into the forward pass (the attention and
logit-lens views). Every call to either is counted, first on the engine alone,
then through the app with the real engine, where hiding the panel is a key press.
"""

import mlx.core as mx
import pytest
from engine_harness import SyncChat
from ui_helpers import wait_for

import model.internals.watch as watch_module
import model.runtime.generate as generate
from chat.app import GlasschatApp
from model.internals.needs import StepNeeds
from model.network.probe import Probe
from model.network.transformer import Transformer
from model.runtime.engine import Engine
from model.runtime.events import InsideStep, TokenGenerated, TurnEnded
from model.runtime.settings import EngineOptions, LookupSettings


@pytest.fixture
def counts(monkeypatch):
    """Calls into top-k, probes made, and forward passes that carried a probe."""
    seen = {"top_k": 0, "probes": 0, "probed_passes": 0}
    real_top_k, real_hidden_states = generate.top_k_of, Transformer.hidden_states

    def top_k_of(*args, **kwargs):
        seen["top_k"] += 1
        return real_top_k(*args, **kwargs)

    class CountedProbe(Probe):
        def __init__(self, *args, **kwargs):
            seen["probes"] += 1
            super().__init__(*args, **kwargs)

    def hidden_states(self, tokens, cache=None, probe=None):
        seen["probed_passes"] += probe is not None
        return real_hidden_states(self, tokens, cache, probe)

    monkeypatch.setattr(generate, "top_k_of", top_k_of)
    monkeypatch.setattr(watch_module, "Probe", CountedProbe)
    monkeypatch.setattr(Transformer, "hidden_states", hidden_states)
    return seen


def test_engine_with_nothing_open_does_no_extra_work(counts):
    run = SyncChat(max_tokens=6, top_k_shown=0)  # what the app asks for with the top-k panel hidden
    _, tokens, _ = run.turn("What is the capital of France?")
    assert len(tokens) >= 4 and all(t.top_k == () for t in tokens)
    assert counts == {"top_k": 0, "probes": 0, "probed_passes": 0}

    # The counters can count: the same turn with the panel shown and the attention view open.
    run.set_needs(StepNeeds(top_k=10, attention_layer=3, interval_s=0.0))
    start = len(run.events)
    _, tokens, _ = run.turn("And of Italy?")
    inside = [e for e in run.events[start:] if isinstance(e, InsideStep)]
    assert counts["top_k"] >= len(tokens) and all(len(t.top_k) == 10 for t in tokens)
    assert counts["probes"] == counts["probed_passes"] >= len(inside) == len(tokens) - 1 >= 3


@pytest.mark.asyncio
async def test_app_with_the_panel_hidden_asks_the_real_engine_for_nothing(counts):
    seen = []

    def engine(options, emit):
        def tee(event):
            seen.append(event)
            emit(event)

        return Engine(options, tee)

    # Prompt lookup off: a verify pass computes several tokens' top-k in one call, and this counts calls.
    app = GlasschatApp(EngineOptions(max_tokens=6, lookup=LookupSettings(enabled=False)), engine_factory=engine)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready, timeout=180)

        async def ask(question):
            before = sum(isinstance(e, TurnEnded) for e in seen)
            app.query_one("#prompt").insert(question)
            await pilot.press("enter")
            await wait_for(
                pilot, lambda: sum(isinstance(e, TurnEnded) for e in seen) > before and not app.chat.busy, timeout=180
            )

        await pilot.press("f5")  # hide the top-k panel; the extra views are closed already
        await pilot.pause(0.2)
        warm_up = dict(counts)  # the app's start-up (the model's warm-up pass) is not per-token work
        await ask("What is the capital of France?")
        tokens = [e for e in seen if isinstance(e, TokenGenerated)]
        assert len(tokens) >= 4 and all(t.top_k == () for t in tokens)
        assert counts == warm_up

        await pilot.press("f5", "f7")  # the top-k panel and the attention view
        await pilot.pause(0.2)
        first = len(seen)
        await ask("And of Italy?")
        tokens = [e for e in seen[first:] if isinstance(e, TokenGenerated)]
        assert counts["top_k"] - warm_up["top_k"] >= len(tokens) >= 4
        assert counts["probes"] - warm_up["probes"] >= 1


@pytest.fixture
def evaluations(monkeypatch):
    """Every MLX evaluation asked for while a reply's tokens come (after its first): how many arrays each took."""
    seen = {"decoding": False, "calls": []}

    def counted(real):
        def evaluate(*arrays):
            if seen["decoding"]:
                seen["calls"].append(sum(len(a) if isinstance(a, (list, tuple)) else 1 for a in arrays))
            return real(*arrays)

        return evaluate

    monkeypatch.setattr(mx, "eval", counted(mx.eval))
    monkeypatch.setattr(mx, "async_eval", counted(mx.async_eval))
    return seen


def decode_evaluations(run, evaluations, needs, question):
    """A turn under `needs`: (its tokens, its watched steps, the evaluations made while its tokens came)."""
    run.set_needs(needs)
    evaluations["calls"].clear()
    start = len(run.events)

    def on_event(event):
        evaluations["decoding"] = isinstance(event, (TokenGenerated, InsideStep))

    run.on_event = on_event
    run.turn(question)
    evaluations["decoding"] = False
    events = run.events[start:]
    tokens = [e for e in events if isinstance(e, TokenGenerated)]
    return tokens, [e for e in events if isinstance(e, InsideStep)], list(evaluations["calls"])


def test_a_hidden_view_adds_no_evaluation_and_an_open_lens_one_per_watched_step(evaluations):
    # Prompt lookup off: a verify pass settles several tokens in one evaluation, and this counts them per step.
    run = SyncChat(max_tokens=8, top_k_shown=0, lookup=LookupSettings(enabled=False))
    # Every view hidden, the app asks for nothing (test_app_with_the_panel_hidden_asks_the_real_engine_for_nothing).
    hidden = StepNeeds()
    tokens, inside, calls = decode_evaluations(run, evaluations, hidden, "What is the capital of France?")
    # One evaluation per step fed: each is queued before the token before it is shown, so the
    # first one counted is the third token's (the second's was queued before the first was shown).
    assert len(tokens) == 8 and inside == [] and len(calls) == len(tokens) - 2

    # The lens open, every step watched: still one evaluation per step, the lens's rows in it.
    lens = StepNeeds(lens_layers=(), interval_s=0.0)
    tokens, inside, lens_calls = decode_evaluations(run, evaluations, lens, "And of Spain?")
    assert len(tokens) == 8 and len(inside) >= len(tokens) - 2 and all(e.lens for e in inside)
    assert len(lens_calls) == len(calls)  # no second evaluation for the readouts
    assert all(n > m for n, m in zip(lens_calls, calls))  # each took the step's lens arrays with its token
