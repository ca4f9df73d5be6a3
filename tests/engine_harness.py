"""Drive a chat session synchronously on the test's own thread (no engine thread is started).

`SyncEngine` is a ChatEngine (model.runtime.chat_engine) whose calls run at once,
so a test reads a turn's events as soon as `send` returns.
"""

from model.runtime.events import PrefillProgress, TokenGenerated, TurnEnded, TurnFailed, TurnStarted
from model.runtime.session import ChatSession, EngineOptions


class SyncEngine:
    def __init__(self, clock=None, **options):
        self.events = []
        self.on_token = None  # optional hook, called with each TokenGenerated
        self.on_prefill_chunk = None  # optional hook, called with each PrefillProgress
        self.on_event = None  # optional hook, called with every event
        extra = {"clock": clock} if clock is not None else {}
        self.session = ChatSession(EngineOptions(**options), self._emit, **extra)
        self.session.load()

    def _emit(self, event):
        self.events.append(event)
        if self.on_event:
            self.on_event(event)
        if isinstance(event, TokenGenerated) and self.on_token:
            self.on_token(event)
        if isinstance(event, PrefillProgress) and self.on_prefill_chunk:
            self.on_prefill_chunk(event)

    # --- the ChatEngine methods, each run at once --------------------------

    def start(self):
        return self  # loaded in __init__

    def send(self, text):
        self.session.answer(text)

    def cancel(self):
        self.session.cancel()

    def reset(self, system=None):
        self.session.reset(system)

    def restore(self, system, messages):
        self.session.restore(system, messages)

    def restore_tree(self, system, turns, current):
        self.session.restore_tree(system, turns, current)

    def edit(self, after, text):
        self.session.edit(after, text)

    def regenerate(self, turn):
        self.session.regenerate(turn)

    def fork(self, turn, at, token):
        self.session.fork(turn, at, token)

    def switch_branch(self, turn):
        self.session.switch_branch(turn)

    def score(self, turn):
        self.session.score(turn)

    def switch_model(self, model):
        self.session.switch_model(model)

    def set_needs(self, needs):
        self.session.needs = needs

    def set_sampling(self, settings):
        self.update(sampling=settings)

    def update(self, **changes):
        self.session.update(**changes)

    def tokenizer(self):
        return self.session.loaded.tokenizer

    def shutdown(self, timeout=10.0):
        self.session.unload()

    # --- for the tests ------------------------------------------------------

    @property
    def conversation(self):
        return self.session.conversation

    @property
    def cache(self):
        return self.session.conversation.cache

    @property
    def model(self):
        return self.session.loaded.model

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
