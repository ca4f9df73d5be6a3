"""A turn on the engine thread, reported as it runs: the cache move, prefill, each token, the end.

The cache service does the work (model.runtime.cache_service); this turns its steps into
the events every front end reads: TurnStarted once the cache is at the prompt, PrefillProgress
per chunk, PrefillDone with the first token, TokenGenerated per token (with InsideStep for a
watched step and ClusterStep on a split model), then TurnEnded. The text of each token, its
thinking or answer, and the turn's numbers (model.runtime.stats) are worked out here.
"""

from collections.abc import Callable
from typing import Optional

import mlx.core as mx

from model.internals.needs import StepNeeds
from model.internals.watch import read_inside
from model.loading.detokenizer import StreamingDetokenizer
from model.runtime.cache_service import CacheService, GenerationStep
from model.runtime.events import (
    ClusterStep,
    Event,
    PrefillDone,
    PrefillProgress,
    TokenGenerated,
    TopToken,
    TurnEnded,
    TurnStarted,
)
from model.runtime.generate import Cancelled
from model.runtime.inside_event import inside_step
from model.runtime.requests import TurnRequest
from model.runtime.stats import DraftCounts, TurnClock
from model.runtime.thinking import ThinkingTracker

Emit = Callable[[Event], None]


class TurnReport:
    """One turn as it streams: its clock, its text so far (thinking apart), and every id generated."""

    def __init__(self, service: CacheService, request: TurnRequest, emit: Emit, now: Callable[[], float]):
        self.service, self.request, self.emit, self.now = service, request, emit, now
        self.clock = TurnClock(now=now)  # started: prefill time runs from the request reaching the engine
        self.detok = StreamingDetokenizer(service.loaded.tokenizer)
        self.thought = ThinkingTracker(service.markers, request.opens_thinking)
        self.generated: list[int] = []  # every sampled id, a stop token included
        self.stop_reason = "length"
        self.drafts = DraftCounts()  # prompt lookup in this reply so far
        self.rolled_back = 0  # tokens the cache gave back before this turn's prefill

    def run(self, key: Optional[mx.array], needs: Callable[[], StepNeeds], cancelled: Callable[[], bool]) -> None:
        """Move the cache, then prefill and decode until the service says the reply ends (or it is cancelled)."""
        request, service = self.request, self.service
        move = service.move(request.ids, request.sink)
        self.clock.prompt_tokens, self.clock.reused_tokens = len(move.to_feed), move.reused
        for t in request.reply_prefix:  # a fork's forced start, prefilled with the prompt; not generated now
            thinking = self.thought.step(t, count=False)
            self.thought.add_text("" if self.thought.is_marker(t) else self.detok.add(t), thinking)
        note = " ".join([n for n in (request.note, *service.notes(move)) if n])
        self.emit(
            TurnStarted(
                turn_id=request.turn_id,
                prompt_tokens=len(move.to_feed),
                reused_tokens=move.reused,
                note=note,
                prefix_text=self.thought.answer(),
                rebuilt=move.rebuilt,
                rolled_back_tokens=move.rolled_back,
            )
        )
        self.rolled_back = move.rolled_back

        def progress(done: int, total: int) -> None:
            self.emit(PrefillProgress(turn_id=request.turn_id, done=done, total=total, cache=service.state()))

        try:
            for step in service.decode(move, request.decode, key, needs, cancelled, progress, self.now):
                self.report(step)
        except Cancelled:
            self.stop_reason = "cancelled"
        self.end()

    def report(self, step: GenerationStep) -> None:
        """Emit one generated token (and what a watched step saw)."""
        service, turn_id = self.service, self.request.turn_id
        if step.finish_reason == "cancelled":
            # Decoded after the user cancelled (the service notices on the next step): not shown.
            # The cache keeps what was shown; the next turn's ids share it up to there.
            self.stop_reason = "cancelled"
            return
        tok = service.loaded.tokenizer
        self.clock.token_ready()
        if not self.generated:
            self.emit(PrefillDone(turn_id=turn_id, stats=self.clock.prefill(), cache=service.state()))
        self.generated.append(step.token_id)
        index = len(self.request.reply_prefix) + len(self.generated) - 1  # decoding resumes after a fork's start
        thinking = self.thought.step(step.token_id)
        # The markers are not text: the thinking is shown apart from the answer; a stop token is no text either.
        silent = step.finish_reason == "stop" or self.thought.is_marker(step.token_id)
        text = "" if silent else self.detok.add(step.token_id)
        self.thought.add_text(text, thinking)
        self.emit(
            TokenGenerated(
                turn_id=turn_id,
                index=index,
                token_id=step.token_id,
                text=text,
                prob=step.prob,
                top_k=tuple(TopToken(id=i, text=tok.piece(i), prob=p) for i, p in zip(step.top_ids, step.top_probs)),
                live_tok_s=self.clock.live_tok_s(),
                elapsed_s=self.clock.elapsed_s(),
                cache=service.state(),
                thinking=thinking,
                drafted=step.drafted,
                drafts=step.drafts,
            )
        )
        group = service.loaded.group
        if group is not None:
            self.emit(ClusterStep(turn_id=turn_id, index=index, cluster=group.figures(), timing=group.timing()))
        if step.inside is not None:
            # The forward pass that predicted this token consumed the ones before it.
            fed = service.history + self.generated[:-1]
            self.emit(inside_step(turn_id, index, read_inside(step.inside), fed, tok))
        self.drafts = step.drafts
        if step.finish_reason is not None:
            self.stop_reason = step.finish_reason

    def end(self) -> None:
        """Report the reply as the user saw it, and the turn's numbers."""
        thought, request, service = self.thought, self.request, self.service
        thought.add_text(self.detok.flush(), thought.inside)
        whole = (*request.reply_prefix, *self.generated)
        stops = request.decode.stop_ids if request.decode.stop_ids is not None else service.stop_ids
        stats = self.clock.finish(self.stop_reason, self.drafts, thought.thinking_tokens, self.rolled_back)
        self.emit(
            TurnEnded(
                turn_id=request.turn_id,
                text=thought.answer(),
                token_ids=whole,
                stats=stats,
                cache=service.state(),
                reply_ids=tuple(t for t in whole if t not in stops),
                thinking=thought.thinking(),
            )
        )
