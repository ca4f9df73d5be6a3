"""The UI's handle on the engine: starts it and turns its events into Textual messages.

The engine's `emit` runs on the engine thread; `post_message` is thread-safe,
so the UI thread never waits on MLX. Every event arrives, in order; the chat
screen's router decides what to draw when (see `chat/router.py`).
"""

from textual.app import App

from model.runtime.chat_engine import ChatEngine, EngineFactory
from model.runtime.engine import Engine, EngineOptions
from model.runtime.events import Event

from .messages import EngineEvent


class EngineBridge:
    def __init__(self, app: App, options: EngineOptions, factory: EngineFactory = Engine):
        self.app = app
        self.engine: ChatEngine = factory(options, self._emit)

    def _emit(self, event: Event) -> None:
        self.app.post_message(EngineEvent(event))

    def start(self) -> None:
        self.engine.start()

    def __getattr__(self, name):
        # The ChatEngine methods (send, cancel, reset, set_needs, ...): straight to the engine.
        return getattr(self.engine, name)
