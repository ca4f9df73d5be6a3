"""Drive an Engine synchronously on the test's own thread (no engine thread is started)."""

from model.runtime.engine import Engine, EngineOptions
from model.runtime.events import PrefillProgress, TokenGenerated, TurnEnded, TurnFailed, TurnStarted


class SyncEngine:
    def __init__(self, clock=None, **options):
        self.events = []
        self.on_token = None  # optional hook, called with each TokenGenerated
        self.on_prefill_chunk = None  # optional hook, called with each PrefillProgress
        self.on_event = None  # optional hook, called with every event
        extra = {"clock": clock} if clock is not None else {}
        self.engine = Engine(EngineOptions(**options), self._emit, **extra)
        self.engine.load()

    def _emit(self, event):
        self.events.append(event)
        if self.on_event:
            self.on_event(event)
        if isinstance(event, TokenGenerated) and self.on_token:
            self.on_token(event)
        if isinstance(event, PrefillProgress) and self.on_prefill_chunk:
            self.on_prefill_chunk(event)

    @property
    def conversation(self):
        return self.engine.conversation

    @property
    def cache(self):
        return self.engine.conversation.cache

    @property
    def model(self):
        return self.engine.loaded.model

    def turn(self, text):
        """Run one turn; returns (TurnStarted, [TokenGenerated], TurnEnded)."""
        start = len(self.events)
        self.engine.answer(text)
        new = self.events[start:]
        failed = [e for e in new if isinstance(e, TurnFailed)]
        assert not failed, failed[0].message
        started = next(e for e in new if isinstance(e, TurnStarted))
        tokens = [e for e in new if isinstance(e, TokenGenerated)]
        ended = next(e for e in new if isinstance(e, TurnEnded))
        return started, tokens, ended
