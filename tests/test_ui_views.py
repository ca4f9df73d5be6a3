"""The inside views in the app (attention, logit lens, confidence colouring), over a recorded real conversation.

The recording holds watched steps from the real model (see record_ui_events.py);
the fake engine sends them only while a view asks, as the engine does.
"""

import dataclasses

import pytest
from rich.style import Style
from test_ui import send
from ui_helpers import fake_app, text_of, wait_for

from chat.formatting import visible_token
from chat.widgets.attention_panel import AttentionPanel, buckets
from chat.widgets.confidence import ConfidenceText, tint
from chat.widgets.lens_panel import LensPanel, shown_layers
from chat.widgets.transcript import AssistantMessage
from model.runtime.events import InsideStep, TokenGenerated

STORY = "Tell me a story."


async def long_turn(pilot, holder):
    """Play the recorded long reply (the second recorded turn)."""
    app = pilot.app
    await wait_for(pilot, lambda: app.chat.ready)
    holder["engine"].skip_recording()  # the long reply
    await send(pilot, STORY)
    await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))
    await pilot.pause(0.1)  # the last draw's layout pass
    return [e for e in holder["engine"].turns[1]]


@pytest.mark.asyncio
async def test_closed_views_ask_the_engine_for_nothing():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await long_turn(pilot, holder)
        engine = holder["engine"]
        assert not engine.needs.watched
        assert not app.chat.panels["attention"].display and not app.chat.panels["lens"].display
        assert app.chat.panels["attention"].step is None and app.chat.panels["lens"].step is None


@pytest.mark.asyncio
async def test_attention_panel_shows_the_events_numbers_and_picks_layers():
    app, holder = fake_app()
    async with app.run_test(size=(140, 60)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        await pilot.press("f7")
        engine = holder["engine"]
        assert engine.needs.attention_layer == app.chat.panels["attention"].attention_layer
        assert engine.needs.lens_layers is None
        assert app.chat.panels["attention"].attention_layer == 30 // 2
        events = await long_turn(pilot, holder)
        last = [e for e in events if isinstance(e, InsideStep)][-1]
        panel = app.query_one(AttentionPanel)
        # the lens view is closed; the fake numbers the turns it plays itself (the recording's turn 2 plays as 1)
        assert panel.step == dataclasses.replace(last, lens=(), lens_layers=(), turn_id=panel.step.turn_id)
        text = text_of(panel)
        assert f"token #{last.index + 1} · {len(last.attention[0])} positions" in text
        for a in last.most_attended[:5]:
            assert f"{a.weight * 100:5.1f}% {visible_token(a.text)}" in text
        # Heads: one strip per head under the mean (keys go to the panel once it has focus).
        panel.focus()
        await pilot.press("h")
        await pilot.pause(0.1)
        text = text_of(panel)
        assert all(f"h{i} " in text for i in range(len(last.attention)))
        # ←/→ choose the layer the engine watches.
        await pilot.press("right")
        assert engine.needs.attention_layer == 16 and panel.attention_layer == 16
        await pilot.press("left", "left")
        assert engine.needs.attention_layer == 14
        await pilot.press("f7")
        assert not engine.needs.watched


def test_buckets_keep_the_attention_mass():
    weights = [0.5, 0.1, 0.1, 0.1, 0.2]
    assert sum(buckets(weights, 2)) == pytest.approx(1.0)
    assert buckets(weights, 10) == weights  # never more buckets than positions


@pytest.mark.asyncio
async def test_lens_panel_shows_each_layers_top_guess():
    app, holder = fake_app()
    async with app.run_test(size=(140, 60)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        await pilot.press("f8")
        needs = holder["engine"].needs
        assert needs.attention_layer is None and needs.lens_layers == tuple(shown_layers(30))
        events = await long_turn(pilot, holder)
        last = [e for e in events if isinstance(e, InsideStep)][-1]
        text = text_of(app.query_one(LensPanel))
        rows = shown_layers(30)
        assert rows[0] == 0 and rows[-1] == 29 and len(rows) == 10
        assert app.chat.panels["lens"].step.lens_layers == tuple(rows)  # the engine read only the layers shown
        for layer in rows:
            best = last.lens[last.lens_layers.index(layer)][0]
            assert f"L{layer:<3}" in text and f"{best.prob * 100:3.0f}%" in text
        assert visible_token(last.lens[-1][0].text)[:11] in text
        # The attention view stayed closed: the engine sent no attention.
        assert app.chat.panels["lens"].step.attention == ()


@pytest.mark.asyncio
async def test_confidence_colouring_tints_each_token_by_its_sampled_probability():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        events = await long_turn(pilot, holder)
        steps = [e for e in events if isinstance(e, TokenGenerated)]
        await pilot.press("f9")
        view = app.query_one(ConfidenceText)
        reply = app.query_one(AssistantMessage)
        assert not reply.display and reply.twin is view
        assert view.tinted.plain == "".join(s.text for s in steps)  # the reply, token by token
        # Each token's span carries its step and the tint of its probability.
        spans = [span for span in view.tinted.spans if isinstance(span.style, Style) and span.style.meta]
        assert [span.style.meta["step"] for span in spans] == [i for i, s in enumerate(steps) if s.text]
        for span in spans:
            step = steps[span.style.meta["step"]]
            assert span.style.bgcolor.name == tint(step.prob)
        # A cursor shows a step's top-k again.
        view.focus()
        await pilot.press("right", "right")
        await pilot.pause(0.1)
        text = text_of(view)
        chosen = steps[2]
        assert "token #3 " in text and f"sampled at {chosen.prob * 100:.1f}%" in text
        for cand in chosen.top_k[:3]:
            assert f"{visible_token(cand.text)} {cand.prob * 100:.1f}%" in text
        # Off again: the Markdown reply comes back.
        await pilot.press("f9")
        assert reply.display and not app.query(ConfidenceText)


@pytest.mark.asyncio
async def test_confidence_colouring_fills_in_while_a_reply_streams():
    app, holder = fake_app(delay=0.01)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        await pilot.press("f9")
        await send(pilot, "What is the capital of France?")
        await wait_for(pilot, lambda: not app.chat.busy and app.query(ConfidenceText))
        steps = [e for e in holder["engine"].turns[0] if isinstance(e, TokenGenerated)]
        view = app.query_one(ConfidenceText)
        assert len(view.steps) == len(steps)
        assert "The capital of France is Paris." in text_of(view)
        # Off again: the Markdown reply, which was not appended to meanwhile, holds the whole text.
        await pilot.press("f9")
        reply = app.query_one(AssistantMessage)
        assert reply.display and reply.source == reply.text and "Paris" in reply.source


@pytest.mark.asyncio
async def test_confidence_colouring_keeps_the_top_k_computed_with_the_panel_hidden():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        engine = holder["engine"]
        await pilot.press("f5")  # hide Next token: the engine stops computing the top-k
        assert engine.needs.top_k == 0
        await pilot.press("f9")  # confidence colouring shows each step's top-k: computed again
        assert engine.needs.top_k == 10
        await pilot.press("f9")
        assert engine.needs.top_k == 0
