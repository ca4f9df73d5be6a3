"""When each clock starts and stops: prefill time, decode tok/s and the live rate, on a fake clock.

README ("What the numbers mean"): prefill time runs from the message reaching the
engine to the first reply token being ready; decode tok/s is (generated - 1) /
(time of the last token - time of the first); the live figure is the same over
the last 8 tokens. Here the clock only moves when the test moves it, so every
expected number below is worked out by hand from the fake timestamps.
"""

import pytest
from engine_harness import SyncChat

from model.runtime.events import CacheHeld, PrefillDone, PrefillProgress, TokenGenerated, TurnStarted
from model.runtime.stats import TurnClock


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# Gaps between the 11 tokens of a reply: two slow steps, then alternating 0.1 s and 0.3 s.
GAPS = [1.0, 1.0, 0.1, 0.3, 0.1, 0.3, 0.1, 0.3, 0.1, 0.3]
# So, after the first token, tokens are ready at 0, 1.0, 2.0, 2.1, 2.4, 2.5, 2.8, 2.9, 3.2, 3.3, 3.6 s.
# Live rate at each token: tokens in the last 8 gaps / their span (token 9: 8 / (3.3 - 1.0)).
LIVE = [0.0, 1 / 1.0, 2 / 2.0, 3 / 2.1, 4 / 2.4, 5 / 2.5, 6 / 2.8, 7 / 2.9, 8 / 3.2, 8 / 2.3, 8 / 1.6]
DECODE_S, DECODE_TOK_S = 3.6, 10 / 3.6  # an 8-token window would say 5.0, a 9-token one 9 / 2.6


def test_turn_clock_on_a_fake_clock():
    clock = FakeClock()
    turn = TurnClock(prompt_tokens=40, reused_tokens=7, now=clock)
    clock.advance(2.0)  # prefill
    lives = []
    for gap in [*GAPS, None]:
        turn.token_ready()
        lives.append(turn.live_tok_s())
        if gap is not None:
            clock.advance(gap)
    assert lives == pytest.approx(LIVE)
    p = turn.prefill()
    assert (p.prompt_tokens, p.reused_tokens, p.prefill_s, p.prefill_tok_s) == (40, 7, 2.0, 20.0)
    clock.advance(5.0)  # time after the last token is not decode time
    s = turn.finish("length")
    assert s.generated_tokens == 11
    assert s.decode_s == pytest.approx(DECODE_S) and s.decode_tok_s == pytest.approx(DECODE_TOK_S)
    assert s.prefill_s == 2.0 and s.stop_reason == "length"
    assert turn.elapsed_s() == pytest.approx(2.0 + 3.6 + 5.0)


def test_turn_clock_with_one_token_or_none():
    clock = FakeClock()
    turn = TurnClock(prompt_tokens=10, now=clock)
    clock.advance(0.5)
    assert turn.prefill_s == 0.5  # no token yet: prefill so far
    turn.token_ready()
    clock.advance(9.0)
    s = turn.finish("stop")
    assert (s.prefill_s, s.prefill_tok_s, s.generated_tokens, s.decode_s, s.decode_tok_s) == (0.5, 20.0, 1, 0.0, 0.0)
    assert turn.live_tok_s() == 0.0


@pytest.fixture(scope="module")
def timed_turn():
    """One real turn on the default model, its clock moved only by the events it emits."""
    clock = FakeClock()
    run = SyncChat(clock=clock, max_tokens=11, prefill_chunk=8)
    start = clock.t

    def move(event):
        if isinstance(event, TurnStarted):
            clock.advance(0.25)  # reading and templating the message: part of prefill time
        elif isinstance(event, PrefillProgress):
            clock.advance(0.5)  # each prefill chunk
        elif isinstance(event, TokenGenerated) and event.index < len(GAPS):
            clock.advance(GAPS[event.index])  # until the next token is ready

    run.on_event = move
    first = len(run.events)
    run.turn("Count from 1 to 30, separated by commas.")
    return run, start, run.events[first:]


def test_engine_prefill_time_runs_from_arrival_to_the_first_token(timed_turn):
    _, _, events = timed_turn
    chunks = sum(isinstance(e, PrefillProgress) for e in events)
    [done] = [e for e in events if isinstance(e, PrefillDone)]
    assert chunks >= 4  # 8-token chunks, then the last token alone
    expected = 0.25 + 0.5 * chunks
    assert done.stats.prefill_s == pytest.approx(expected)
    assert done.stats.prefill_tok_s == pytest.approx(done.stats.prompt_tokens / expected)
    assert events[-1].stats.prefill_s == pytest.approx(expected)  # the turn's final numbers agree
    # PrefillDone comes when the first token is ready, before that token is reported.
    assert events.index(done) < next(i for i, e in enumerate(events) if isinstance(e, TokenGenerated))


def test_engine_decode_rate_and_live_rate(timed_turn):
    _, start, events = timed_turn
    tokens = [e for e in events if isinstance(e, TokenGenerated)]
    ended = events[-1]
    assert len(tokens) == 11 and ended.stats.stop_reason == "length"
    assert [t.live_tok_s for t in tokens] == pytest.approx(LIVE)
    assert ended.stats.decode_s == pytest.approx(DECODE_S)
    assert ended.stats.decode_tok_s == pytest.approx(DECODE_TOK_S)
    assert ended.stats.generated_tokens == 11
    prefill_s = ended.stats.prefill_s
    ready = [prefill_s + sum(GAPS[:i]) for i in range(11)]  # since the message arrived
    assert [t.elapsed_s for t in tokens] == pytest.approx(ready)


def test_restoring_a_conversation_times_its_prefill(timed_turn):
    run, _, _ = timed_turn
    tree = run.conversation.tree
    turns, current = list(tree.turns.values()), tree.current
    run.reset()  # an empty cache: the whole saved path is read again
    first = len(run.events)
    run.restore(None, turns, current)
    events = run.events[first:]
    chunks = sum(isinstance(e, PrefillProgress) for e in events)
    [restored] = [e for e in events if isinstance(e, CacheHeld)]
    assert chunks >= 2 and restored.seconds == pytest.approx(0.5 * chunks)
    assert restored.prompt_tokens == len(run.service.history) and restored.reused_tokens == 0
