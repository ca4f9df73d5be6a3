"""Pacing keeps its promise at 400 tokens a second: every step kept, the UI thread within its CPU budget.

A fake engine replays a recorded 160-token reply five times over (800 steps) at
400 steps a second, with every view open (the most the UI can be asked to do).
The reply, the decode chart and the final figures must hold every step, and the
UI thread's CPU share over the reply (measured with the thread's own clock, as the
pacer measures it) must stay within the pacer's budget, or the pacer must be at
its slowest rate: the most it can do. CPU time is counted, not speed asserted.
"""

import dataclasses
import time

import pytest
from ui_helpers import fake_app, wait_for

from chat import draw_pacer
from chat.views import VIEWS
from chat.widgets.decode_panel import DecodePanel
from model.runtime.events import InsideStep, TokenGenerated, TurnEnded

RATE = 400.0  # steps a second
PLAYS = 5  # the recorded long reply, played this many times in one reply


def longer(turn: list, plays: int) -> list:
    """One recorded turn with its steps (tokens and watched steps) played `plays` times, indices counted on."""
    steps = [e for e in turn if isinstance(e, (TokenGenerated, InsideStep))]
    first = turn.index(steps[0])
    last = turn.index(steps[-1])
    n = sum(isinstance(e, TokenGenerated) for e in steps)
    repeated = [dataclasses.replace(e, index=e.index + n * p) for p in range(plays) for e in steps]
    ended = turn[-1]
    assert isinstance(ended, TurnEnded)
    stats = dataclasses.replace(ended.stats, generated_tokens=n * plays)
    return turn[:first] + repeated + turn[last + 1 : -1] + [dataclasses.replace(ended, stats=stats)]


@pytest.mark.asyncio
@pytest.mark.parametrize("every_view", [False, True], ids=["default panels", "every view"])
async def test_at_400_tokens_a_second_every_step_is_kept_and_the_ui_stays_within_budget(monkeypatch, every_view):
    draws = []
    real_drew = draw_pacer.DrawPacer.drew

    def drew(pacer):
        draws.append((time.perf_counter(), time.thread_time(), pacer.interval))
        real_drew(pacer)

    monkeypatch.setattr(draw_pacer.DrawPacer, "drew", drew)
    app, holder = fake_app(delay=1 / RATE)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        for spec in VIEWS if every_view else []:
            await app.chat.show_view(spec.id, True)
        engine = holder["engine"]
        engine.skip_recording()  # the long reply (160 tokens)
        engine.turns[1] = longer(engine.turns[1], PLAYS)
        expected = [e for e in engine.turns[1] if isinstance(e, TokenGenerated)]
        assert len(expected) == 160 * PLAYS

        app.query_one("#prompt").insert("Tell me a story.")
        wall, cpu = time.perf_counter(), time.thread_time()
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.busy and app.chat.transcript.reply is None, timeout=60)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu

        # No step lost: the reply holds every token, the chart every rate, the final figures every step.
        reply = app.chat.transcript.last_reply()
        assert [s.token_id for s in reply.steps] == [e.token_id for e in expected]
        panel = app.query_one(DecodePanel)
        assert len(panel.rates) == sum(1 for e in expected if e.live_tok_s)
        assert panel.generated == len(expected)

        # The UI's CPU share over the reply: within the budget, or the pacer at its slowest (all it can do).
        share = cpu / wall
        slowest = 1 / draw_pacer.MIN_HZ
        assert wall >= len(expected) / RATE * 0.9  # the reply took as long as its steps (paced by the fake)
        assert len(draws) >= 3
        assert share <= draw_pacer.CPU_BUDGET * 1.25 or draws[-1][2] == slowest, (share, draws[-1][2])
