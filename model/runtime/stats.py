"""The numbers the panels show, defined once (see README, "What the numbers mean").

- prefill time: request reaching the engine -> first generated token ready,
  including the last forward pass and the first sampling.
- prefill tok/s: prompt tokens (this turn's new tokens only) / prefill time.
- decode tok/s: (generated - 1) / (last token time - first token time).
- live tok/s: the same over the last LIVE_WINDOW tokens, for the chart.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

LIVE_WINDOW = 8


def tokens_per_s(times: Sequence[float]) -> float:
    """The decode rate of tokens ready at `times`: (count - 1) / (last - first); 0 for fewer than two."""
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else 0.0


@dataclass(frozen=True, kw_only=True)
class PrefillStats:
    prompt_tokens: int  # prefilled this turn
    reused_tokens: int  # already in the cache from earlier turns
    prefill_s: float
    prefill_tok_s: float


@dataclass(frozen=True, kw_only=True)
class TurnStats:
    prompt_tokens: int
    reused_tokens: int
    prefill_s: float
    prefill_tok_s: float
    generated_tokens: int
    decode_tok_s: float
    decode_s: float  # first token -> last token
    stop_reason: str  # "stop", "length", "cancelled"
    thinking_tokens: int = 0  # of generated_tokens, those between <think> and </think> (both included)
    rolled_back_tokens: int = 0  # taken off the cache before prefill: an earlier turn the template rewrote
    drafted_tokens: int = 0  # guessed by prompt lookup (see model.runtime.speculate)
    accepted_tokens: int = 0  # of those, confirmed by the model and kept

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DraftCounts:
    """Prompt lookup in the reply so far: tokens guessed, and how many the model kept."""

    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


class TurnClock:
    def __init__(self, prompt_tokens: int = 0, reused_tokens: int = 0, now: Callable[[], float] = time.perf_counter):
        self.now = now
        self.t_request = now()
        self.prompt_tokens = prompt_tokens
        self.reused_tokens = reused_tokens
        self.token_times: list[float] = []

    def token_ready(self) -> float:
        t = self.now()
        self.token_times.append(t)
        return t

    @property
    def prefill_s(self) -> float:
        end = self.token_times[0] if self.token_times else self.now()
        return end - self.t_request

    def prefill(self) -> PrefillStats:
        s = self.prefill_s
        return PrefillStats(
            prompt_tokens=self.prompt_tokens,
            reused_tokens=self.reused_tokens,
            prefill_s=s,
            prefill_tok_s=self.prompt_tokens / s if s > 0 else 0.0,
        )

    @property
    def decode_s(self) -> float:
        return self.token_times[-1] - self.token_times[0] if len(self.token_times) > 1 else 0.0

    def decode_tok_s(self) -> float:
        return tokens_per_s(self.token_times)

    def live_tok_s(self) -> float:
        return tokens_per_s(self.token_times[-(LIVE_WINDOW + 1) :])

    def elapsed_s(self) -> float:
        return self.now() - self.t_request

    def finish(
        self, stop_reason: str, drafts: DraftCounts = DraftCounts(), thinking_tokens: int = 0, rolled_back: int = 0
    ) -> TurnStats:
        p = self.prefill()
        return TurnStats(
            prompt_tokens=p.prompt_tokens,
            reused_tokens=p.reused_tokens,
            prefill_s=p.prefill_s,
            prefill_tok_s=p.prefill_tok_s,
            generated_tokens=len(self.token_times),
            decode_tok_s=self.decode_tok_s(),
            decode_s=self.decode_s,
            stop_reason=stop_reason,
            thinking_tokens=thinking_tokens,
            rolled_back_tokens=rolled_back,
            drafted_tokens=drafts.drafted,
            accepted_tokens=drafts.accepted,
        )
