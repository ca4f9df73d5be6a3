"""A conversation driven without a UI: its owner is the caller's thread, the engine answers through a queue.

`glasschat run` and `glasschat replay` use this, and so do the bench and the tests;
they read exactly the events the Textual app reads. The caller owns the conversation
(model.runtime.conversation): it plans each turn, sends its ids, and hands the end back.
"""

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from model.errors import ModelError
from model.runtime.chat_engine import ChatEngine, EngineFactory
from model.runtime.conversation import Conversation, Saver, TurnInProgress
from model.runtime.engine import Engine
from model.runtime.events import (
    ClusterStep,
    ConversationReset,
    Event,
    ModelFailed,
    ModelReady,
    OptionsAdopted,
    PrefillDone,
    TokenGenerated,
    TurnEnded,
    TurnFailed,
    TurnStarted,
)
from model.runtime.settings import EngineOptions


@dataclass
class TurnResult:
    """Everything one turn produced: the turn as planned, then its events."""

    user: str
    turn: Optional[TurnInProgress] = None
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


Plan = Callable[[Conversation], TurnInProgress]  # a turn planned on the conversation: follow, edit, regenerate, fork


class HeadlessSession:
    """An engine, a queue of its events, and the conversation, all used from one (non-engine) thread."""

    def __init__(
        self,
        options: EngineOptions,
        on_event: Callable[[Event], None] = lambda _: None,
        factory: EngineFactory = Engine,
        saver: Optional[Saver] = None,
    ):
        self.events: queue.Queue = queue.Queue()
        self.on_event = on_event
        self.conversation = Conversation(options, saver)
        self.engine: ChatEngine = factory(options, self.events.put).start()
        self.ready = self._wait_ready()
        self.conversation.attach(self.engine.text())
        self.conversation.reset()  # the saver, if any, starts a new saved conversation

    def _next(self) -> Event:
        event = self.events.get()
        self.on_event(event)
        if isinstance(event, OptionsAdopted):
            self.conversation.adopt(event.options)
        return event

    def _wait_ready(self) -> ModelReady:
        while True:
            event = self._next()
            if isinstance(event, ModelFailed):
                self.engine.shutdown()
                raise ModelError(event.message)
            if isinstance(event, ModelReady):
                return event

    def reset(self, system: Optional[str] = None) -> None:
        """A new conversation: an empty tree, the cache emptied (the engine's ConversationReset is read here)."""
        self.conversation.reset(system)
        self.engine.reset()
        while not isinstance(self._next(), ConversationReset):
            pass

    def turn(self, user: str) -> TurnResult:
        """A user message after the current turn, answered."""
        return self.ask(lambda conversation: conversation.follow(user))

    def ask(self, plan: Plan) -> TurnResult:
        """Any turn (a message, an edit, a regenerate, a fork), planned by `plan`, answered."""
        return self.collect(self.send(plan))

    def send(self, plan: Plan) -> TurnResult:
        """Plan the turn and send it; a plan the conversation refuses comes back as `failed`, nothing sent."""
        try:
            turn = plan(self.conversation)
        except ModelError as exc:
            return TurnResult("", failed=TurnFailed(turn_id=0, message=str(exc)))
        self.engine.generate(self.conversation.request(turn))
        return TurnResult(turn.user, turn)

    def collect(self, result: TurnResult) -> TurnResult:
        """Read events into `result` until its turn ends; safe to call again after an interrupt."""
        while result.ended is None and result.failed is None:
            event = self._next()
            if isinstance(event, TurnStarted):
                result.started = event
            elif isinstance(event, PrefillDone):
                result.prefill = event
            elif isinstance(event, TokenGenerated):
                result.tokens.append(event)
            elif isinstance(event, ClusterStep):
                result.cluster.append(event)
            elif isinstance(event, TurnEnded):
                result.ended = event
                self.conversation.ended(event)
            elif isinstance(event, TurnFailed):
                result.failed = event
                self.conversation.failed(event.turn_id)
        return result

    def close(self) -> None:
        self.engine.shutdown()
