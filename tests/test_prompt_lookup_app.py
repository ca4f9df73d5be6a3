"""Prompt lookup in the engine and the app: the events, the Decode panel, confidence colouring, the switch.

The engine runs the default model (greedy, a quoting prompt): the reply with lookup on
is the reply with it off, and the events say which tokens were guessed. The UI tests
replay the recorded conversation with some tokens marked as guessed.
"""

import dataclasses

import pytest
from engine_harness import SyncChat
from rich.style import Style
from test_ui_views import long_turn
from ui_helpers import fake_app, text_of, wait_for

from chat import settings_forms
from chat.launch import read_settings
from chat.widgets.confidence import ConfidenceText
from chat.widgets.decode_panel import DecodePanel
from model.runtime.events import TokenGenerated, TurnEnded
from model.runtime.settings import LookupSettings
from model.runtime.stats import DraftCounts

QUOTE = (
    "Repeat this exactly: Every night its keeper climbed the narrow stairs, trimmed the wick, "
    "and watched the beam sweep across the dark water."
)


def test_engine_events_mark_guessed_tokens_and_the_reply_is_unchanged():
    # On by choice: auto leaves it off with the CPU's default 4-bit weights (speculate.pays_off).
    run = SyncChat(max_tokens=40, lookup=LookupSettings(enabled=True))
    on = [run.turn(QUOTE), run.turn("Again, please.")]
    run.reset()
    run.update(lookup=LookupSettings(enabled=False))
    off = [run.turn(QUOTE), run.turn("Again, please.")]
    for (_, _, ended_on), (_, tokens_off, ended_off) in zip(on, off):
        assert ended_on.token_ids == ended_off.token_ids  # greedy: the same reply, token for token
        assert ended_off.stats.drafted_tokens == 0 and not any(t.drafted for t in tokens_off)
    _, tokens, ended = on[0]
    # Each guessed token that was kept is marked, and the counts only grow.
    assert sum(t.drafted for t in tokens) == ended.stats.accepted_tokens > len(tokens) // 2
    assert ended.stats.drafted_tokens >= ended.stats.accepted_tokens
    counts = [t.drafts for t in tokens]
    assert all(a.drafted <= b.drafted and a.accepted <= b.accepted for a, b in zip(counts, counts[1:]))
    assert counts[-1] == DraftCounts(ended.stats.drafted_tokens, ended.stats.accepted_tokens)
    # The second turn reused the cache the first left: its history is what the cache holds.
    assert on[1][0].reused_tokens == off[1][0].reused_tokens > 0
    assert len(run.service.held_ids()) == run.cache.length


def guessed(events):
    """The recorded turn with every token but each third marked as a kept guess."""
    out, drafted = [], 0
    for e in events:
        if isinstance(e, TokenGenerated):
            mark = e.index % 3 != 0
            drafted += mark + (e.index % 9 == 0)  # some guesses were rejected
            e = dataclasses.replace(e, drafted=mark, drafts=DraftCounts(drafted, drafted - e.index // 9 - 1))
        out.append(e)
    last = [e for e in out if isinstance(e, TokenGenerated)][-1].drafts
    end = out[-1]
    assert isinstance(end, TurnEnded)
    out[-1] = dataclasses.replace(
        end, stats=dataclasses.replace(end.stats, drafted_tokens=last.drafted, accepted_tokens=last.accepted)
    )
    return out


@pytest.mark.asyncio
async def test_decode_panel_and_confidence_colouring_show_the_guesses():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        engine = holder["engine"]
        engine.turns[1] = guessed(engine.turns[1])
        events = await long_turn(pilot, holder)
        steps = [e for e in events if isinstance(e, TokenGenerated)]
        final = events[-1].stats
        panel = text_of(app.query_one(DecodePanel))
        rate = f"{final.accepted_tokens / final.drafted_tokens:.0%}"
        assert f"lookup: {final.drafted_tokens} drafted, {final.accepted_tokens} accepted ({rate})" in panel

        await pilot.press("f9")
        view = app.query_one(ConfidenceText)
        spans = [span for span in view.tinted.spans if isinstance(span.style, Style) and span.style.meta]
        underlined = {span.style.meta["step"] for span in spans if span.style.underline}
        assert underlined == {i for i, s in enumerate(steps) if s.text and s.drafted} != set()
        assert "underlined: guessed by prompt lookup, confirmed" in text_of(view)
        view.focus()
        await pilot.press("right")  # step 1: a guess
        await pilot.pause(0.1)
        assert "a prompt-lookup guess the model confirmed" in text_of(view)
        await pilot.press("left")  # step 0: sampled
        await pilot.pause(0.1)
        assert "a prompt-lookup guess" not in text_of(view)


@pytest.mark.asyncio
async def test_the_decode_panel_says_nothing_of_lookup_when_nothing_was_guessed():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await long_turn(pilot, holder)
        assert "lookup" not in text_of(app.query_one(DecodePanel))


@pytest.mark.asyncio
async def test_the_palette_switch_reaches_the_engine_and_the_settings_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    app, holder = fake_app(settings_file=read_settings())
    async with app.run_test(size=(140, 45)) as pilot:
        assert app.options.lookup.enabled is None  # auto
        for enabled, saved in ((True, "on"), (False, "off"), (None, "auto")):
            settings_forms.toggle_lookup(app)
            await wait_for(pilot, lambda enabled=enabled: app.options.lookup.enabled is enabled)
            assert holder["engine"].updates[-1].lookup == LookupSettings(enabled=enabled)
            assert read_settings().settings.prompt_lookup == saved
