"""The Textual app driven with Pilot over a fake engine that replays a recorded real conversation."""

import pytest
from ui_helpers import asked, fake_app, text_of, wait_for

from chat.formatting import human_bytes, rate, seconds, visible_token
from chat.widgets.cache_panel import CachePanel
from chat.widgets.prefill_panel import PrefillPanel
from chat.widgets.prompt_input import PromptInput
from chat.widgets.topk_panel import TopKPanel
from chat.widgets.transcript import AssistantMessage, Transcript, UserMessage
from model.runtime.events import PrefillDone, TokenGenerated, TurnEnded

QUESTION = "What is the capital of France?"


async def send(pilot, text):
    await pilot.click(PromptInput)
    pilot.app.query_one(PromptInput).insert(text)
    await pilot.press("enter")


def recorded_turn(engine, n):
    return engine.turns[n]


@pytest.mark.asyncio
async def test_panels_show_exactly_the_event_numbers():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        await send(pilot, QUESTION)
        await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))
        events = recorded_turn(holder["engine"], 0)
        prefill = next(e for e in events if isinstance(e, PrefillDone)).stats
        last_step = [e for e in events if isinstance(e, TokenGenerated)][-1]
        ended = events[-1]
        assert isinstance(ended, TurnEnded)

        prefill_text = text_of(app.query_one(PrefillPanel))
        assert f"prefilled {prefill.prompt_tokens} tokens" in prefill_text
        assert f"reused {prefill.reused_tokens}" in prefill_text
        assert seconds(prefill.prefill_s) in prefill_text and rate(prefill.prefill_tok_s) in prefill_text

        decode_text = text_of(app.query_one("#decode-numbers"))
        assert rate(ended.stats.decode_tok_s) in decode_text
        assert f"tokens {ended.stats.generated_tokens}" in decode_text

        cache = ended.cache
        cache_text = text_of(app.query_one(CachePanel))
        assert f"held {cache.tokens} / {cache.capacity} tokens" in cache_text
        assert f"sink {cache.sink_tokens}" in cache_text and f"evicted {cache.evicted_total}" in cache_text
        assert f"{human_bytes(cache.bytes)} now / {human_bytes(cache.bytes_full)} full" in cache_text
        assert f"pos {cache.position}" in cache_text

        topk_text = text_of(app.query_one(TopKPanel))
        for cand in last_step.top_k:
            assert visible_token(cand.text) in topk_text
            assert f"{cand.prob * 100:5.1f}%" in topk_text
        assert "▶ " + visible_token(last_step.top_k[0].text) in topk_text
        assert app.query_one(AssistantMessage).text == ended.text


@pytest.mark.asyncio
async def test_escape_cancels_and_keeps_the_partial_reply():
    app, holder = fake_app(delay=0.05)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        holder["engine"].skip_recording()  # replay the long recorded turn
        await send(pilot, "Tell me a story.")
        await wait_for(pilot, lambda: len(app.query_one(AssistantMessage).text) > 20)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.chat.busy)
        reply = app.query_one(AssistantMessage)
        full = recorded_turn(holder["engine"], 1)[-1].text
        assert 20 < len(reply.text) < len(full) and full.startswith(reply.text)
        assert reply.has_class("cancelled")
        assert "stopped" in text_of(app.query_one("#status"), 140)


@pytest.mark.asyncio
async def test_typing_during_a_reply_works_and_queues():
    app, holder = fake_app(delay=0.01)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        engine = holder["engine"]
        engine.skip_recording()
        engine.turn_gate.clear()  # the reply pauses after its first token
        await send(pilot, "Tell me a story.")
        await wait_for(pilot, lambda: app.chat.busy and app.query(AssistantMessage))
        await pilot.press(*"and then?")
        assert app.query_one(PromptInput).text == "and then?"
        await pilot.press("enter")
        bubbles = app.query(UserMessage)
        assert len(bubbles) == 2 and bubbles.last().has_class("queued")
        assert asked(app) == ["Tell me a story."]  # not sent while the reply runs
        engine.turn_gate.set()
        await wait_for(pilot, lambda: asked(app)[-1] == "and then?", timeout=30)
        assert not bubbles.last().has_class("queued")


@pytest.mark.asyncio
async def test_view_stops_following_when_scrolled_up():
    app, holder = fake_app()
    async with app.run_test(size=(64, 16)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        engine = holder["engine"]
        engine.skip_recording()
        engine.gate_at, _ = 100, engine.turn_gate.clear()  # stream 100 tokens, then hold
        await send(pilot, "Tell me a story.")
        transcript = app.query_one(Transcript)
        await wait_for(pilot, lambda: len(app.query_one(AssistantMessage).text) > 300)
        await pilot.pause(0.3)
        assert transcript.max_scroll_y > 0
        assert transcript.scroll_y == transcript.max_scroll_y  # following the newest text
        # The reader scrolls to the top with the keyboard (a wheel works the same way).
        transcript.focus()
        await pilot.press("home")
        before = transcript.max_scroll_y
        engine.turn_gate.set()
        await wait_for(pilot, lambda: not app.chat.busy)
        await pilot.pause(0.3)
        assert transcript.max_scroll_y > before + 2  # the reply grew below
        assert transcript.scroll_y == 0  # and the view stayed where the reader put it
        await pilot.press("end")  # back at the bottom, it follows again
        await pilot.pause(0.1)
        assert transcript.scroll_y == transcript.max_scroll_y


@pytest.mark.asyncio
async def test_empty_message_is_not_sent():
    app, holder = fake_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        await send(pilot, "   ")
        await pilot.pause(0.1)
        assert holder["engine"].requests == [] and not app.query(UserMessage)


@pytest.mark.asyncio
async def test_hiding_top_k_stops_the_engine_computing_it():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        await pilot.press("f5")
        assert not app.query_one(TopKPanel).display
        assert holder["engine"].needs.top_k == 0
        await pilot.press("f5")
        assert holder["engine"].needs.top_k == 10


@pytest.mark.asyncio
async def test_narrow_screen_collapses_the_panels():
    app, _ = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        assert app.screen.has_class("narrow")
        assert not app.query_one("#sidebar").display or app.query_one("#sidebar").region.width == 0


@pytest.mark.asyncio
async def test_token_chips_are_the_tokenizer_output(default_model, golden_tokenize):
    from chat.widgets.token_chips import TokenChips

    tok = default_model.tokenizer
    case = golden_tokenize[0]  # "The cat sat on the unbelievable mat."
    app, holder = fake_app(tokenizer=tok)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        await send(pilot, case["text"])
        await wait_for(pilot, lambda: not app.chat.busy)
        bubble = app.query_one(UserMessage)
        bubble.focus()
        await pilot.press("t")
        chips = app.query_one(TokenChips)
        assert chips.ids == case["ids"] == tok.encode_text(case["text"])
        shown = text_of(chips)
        assert all(str(i) in shown for i in case["ids"])
        for tid in case["ids"]:
            assert visible_token(tok.piece(tid)) in shown
        assert "·unbelie vable" in shown  # how this vocabulary really splits the long word
        await pilot.press("t")
        await pilot.pause(0.05)
        assert not app.query(TokenChips)
        # The prompt box counts tokens as the user types.
        await send_text_only(pilot, case["text"])
        assert app.query_one(PromptInput).border_subtitle == f"{len(case['ids'])} tokens"


async def send_text_only(pilot, text):
    await pilot.click(PromptInput)
    pilot.app.query_one(PromptInput).insert(text)
    await pilot.pause(0.05)
