"""Drive the engine without a UI: send messages, read the event stream, collect each turn.

`glasschat run` and `glasschat replay` use this, and so do the tests; they
read exactly the events the Textual app reads.
"""

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from model.errors import ModelError
from model.runtime.chat_engine import ChatEngine, EngineFactory
from model.runtime.engine import Engine, EngineOptions
from model.runtime.events import (
    ClusterStep,
    Event,
    ModelFailed,
    ModelReady,
    PrefillDone,
    TokenGenerated,
    TurnEnded,
    TurnFailed,
    TurnStarted,
)


@dataclass
class TurnResult:
    """Everything one turn produced, gathered from its events."""

    user: str
    started: Optional[TurnStarted] = None
    prefill: Optional[PrefillDone] = None
    tokens: list[TokenGenerated] = field(default_factory=list)
    ended: Optional[TurnEnded] = None
    failed: Optional[TurnFailed] = None
    cluster: list[ClusterStep] = field(default_factory=list)  # with a model split over ranks: one per token

    def as_json(self, model_info: dict) -> dict:
        e = self.ended
        stats = e.stats
        return {
            "text": e.text,
            "token_ids": list(e.token_ids),
            "prompt_tokens": stats.prompt_tokens,
            "reused_tokens": stats.reused_tokens,
            "rolled_back_tokens": stats.rolled_back_tokens,
            "prefill_s": stats.prefill_s,
            "prefill_tok_s": stats.prefill_tok_s,
            "generated_tokens": stats.generated_tokens,
            "thinking_tokens": stats.thinking_tokens,
            "thinking": e.thinking,
            "decode_tok_s": stats.decode_tok_s,
            "stop_reason": stats.stop_reason,
            "drafted_tokens": stats.drafted_tokens,
            "accepted_tokens": stats.accepted_tokens,
            "model": model_info,
            "cache": e.cache.as_dict(),
            "top_k": [[[t.id, t.text, t.prob] for t in step.top_k] for step in self.tokens],
        }


class HeadlessSession:
    """An engine plus a queue of its events, used from one (non-engine) thread."""

    def __init__(
        self,
        options: EngineOptions,
        on_event: Callable[[Event], None] = lambda _: None,
        factory: EngineFactory = Engine,
    ):
        self.events: queue.Queue = queue.Queue()
        self.on_event = on_event
        self.engine: ChatEngine = factory(options, self.events.put).start()
        self.ready = self._wait_ready()

    def _next(self) -> Event:
        event = self.events.get()
        self.on_event(event)
        return event

    def _wait_ready(self) -> ModelReady:
        while True:
            event = self._next()
            if isinstance(event, ModelFailed):
                self.engine.shutdown()
                raise ModelError(event.message)
            if isinstance(event, ModelReady):
                return event

    def turn(self, user: str) -> TurnResult:
        self.engine.send(user)
        return self.collect(TurnResult(user))

    def request(self, ask: Callable[[ChatEngine], None]) -> TurnResult:
        """Any request that runs a turn (a message, an edit, a regenerate, a fork): `ask(engine)` sends it."""
        ask(self.engine)
        return self.collect(TurnResult(""))

    def collect(self, result: TurnResult) -> TurnResult:
        """Read events into `result` until its turn ends; safe to call again after an interrupt."""
        while True:
            event = self._next()
            if isinstance(event, TurnStarted):
                result.started = event
                result.user = event.user
            elif isinstance(event, PrefillDone):
                result.prefill = event
            elif isinstance(event, TokenGenerated):
                result.tokens.append(event)
            elif isinstance(event, ClusterStep):
                result.cluster.append(event)
            elif isinstance(event, TurnEnded):
                result.ended = event
                return result
            elif isinstance(event, TurnFailed):
                result.failed = event
                return result

    def close(self) -> None:
        self.engine.shutdown()
