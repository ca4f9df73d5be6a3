"""A conversation and an engine driven synchronously on the test's own thread (no engine thread is started).

`SyncChat` owns a `Conversation` (as the app and the headless commands do) and asks an
`EngineCore`, whose requests run before the call returns, so a test reads a turn's
events as soon as `send` returns, and a hook called with an event runs mid-turn.
"""

from dataclasses import replace

from model.errors import ModelError
from model.runtime.conversation import Conversation
from model.runtime.engine_core import EngineCore
from model.runtime.events import (
    CacheHeld,
    ModelReady,
    OptionsAdopted,
    PrefillProgress,
    TokenGenerated,
    TurnEnded,
    TurnFailed,
    TurnStarted,
)
from model.runtime.settings import EngineOptions


class SyncChat:
    def __init__(self, clock=None, **options):
        self.events = []
        self.on_token = None  # optional hook, called with each TokenGenerated
        self.on_prefill_chunk = None  # optional hook, called with each PrefillProgress
        self.on_event = None  # optional hook, called with every event
        options = EngineOptions(**options)
        self.conversation = Conversation(options)
        extra = {"clock": clock} if clock is not None else {}
        self.core = EngineCore(options, self._emit, **extra)
        self._showing = None  # the turn a hold request shows, once the cache holds it
        if not self.core.open():
            raise ModelError(self.events[-1].message)

    def _emit(self, event):
        self.events.append(event)
        if isinstance(event, OptionsAdopted):
            self.conversation.adopt(event.options)
            if event.cache_reset:
                self.conversation.reset()
        elif isinstance(event, ModelReady):  # the first model, or another: a new conversation on it
            self.conversation.attach(self.core.text())
            self.conversation.reset()
        elif isinstance(event, TurnEnded):
            self.conversation.ended(event)
        elif isinstance(event, TurnFailed):
            self.conversation.failed(event.turn_id)
        elif isinstance(event, CacheHeld) and self._showing is not None:
            self.conversation.show(self._showing)
            self._showing = None
        if self.on_event:
            self.on_event(event)
        if isinstance(event, TokenGenerated) and self.on_token:
            self.on_token(event)
        if isinstance(event, PrefillProgress) and self.on_prefill_chunk:
            self.on_prefill_chunk(event)

    def _refused(self, exc: ModelError) -> None:
        """A request the conversation refuses before the engine is asked: reported as the engine reports a failure."""
        self._emit(TurnFailed(turn_id=0, message=str(exc)))

    # --- the conversation's requests, each answered at once ---------------------------

    def _turn(self, plan, *args) -> None:
        try:
            turn = plan(*args)
        except ModelError as exc:
            self._refused(exc)
            return
        self.core.generate(self.conversation.request(turn))

    def send(self, text):
        self._turn(self.conversation.follow, text)

    def edit(self, after, text):
        self._turn(self.conversation.edit, after, text)

    def regenerate(self, turn_id):
        self._turn(self.conversation.regenerate, turn_id)

    def fork(self, turn_id, at, token):
        self._turn(self.conversation.fork, turn_id, at, token)

    def switch_branch(self, turn_id):
        try:
            request = self.conversation.hold_request(turn_id)
        except ModelError as exc:
            self._refused(exc)
            return
        self._showing = turn_id
        self.core.hold(request)

    def restore(self, system, turns, current):
        self.core.hold(self.conversation.restore(system, list(turns), current))

    def score(self, turn_id):
        try:
            request = self.conversation.score_request(turn_id)
        except ModelError as exc:
            self._refused(exc)
            return
        self.core.score(request)

    def reset(self, system=None):
        self.conversation.reset(system)
        self.core.reset()

    def update(self, **changes):
        self.core.update(replace(self.conversation.options, **changes))

    def set_needs(self, needs):
        self.core.set_needs(needs)

    def cancel(self):
        self.core.cancel()

    def switch_model(self, model):
        self.core.switch_model(model)

    def tokenizer(self):
        return self.core.text().tokenizer

    # --- for the tests ------------------------------------------------------

    @property
    def service(self):
        return self.core.service

    @property
    def cache(self):
        return self.core.service.cache

    @property
    def model(self):
        return self.core.loaded.model

    @property
    def loaded(self):
        return self.core.loaded

    def turn(self, text):
        """Run one turn; returns (TurnStarted, [TokenGenerated], TurnEnded)."""
        start = len(self.events)
        self.send(text)
        new = self.events[start:]
        failed = [e for e in new if isinstance(e, TurnFailed)]
        assert not failed, failed[0].message
        started = next(e for e in new if isinstance(e, TurnStarted))
        tokens = [e for e in new if isinstance(e, TokenGenerated)]
        ended = next(e for e in new if isinstance(e, TurnEnded))
        return started, tokens, ended
