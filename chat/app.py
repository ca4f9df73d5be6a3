"""The Textual app: it owns the conversation and the engine, and routes the engine's events to the chat screen.

The conversation (model.runtime.conversation) is the one owner of the tree, the turn ids
and the options in force; the engine (model.runtime.chat_engine) only moves its cache, on
its own thread, and reports back through events. Widgets draw (each the events it marks,
see `chat/engine_view.py`); the chat screen's control asks and answers.
"""

import sys
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Optional

from textual.app import App, SystemCommand
from textual.screen import Screen

from model.loading.tokenizer import TextTokenizer
from model.runtime.chat_engine import ChatEngine, EngineFactory
from model.runtime.conversation import Conversation
from model.runtime.engine import Engine
from model.runtime.events import Event
from model.runtime.settings import EngineOptions

from . import views as view_table
from .event_inbox import EventInbox
from .messages import EngineEventsWaiting
from .recorder import ConversationRecorder
from .screens.chat import ChatScreen
from .screens.help import HelpScreen
from .user_settings import SettingsFile


class GlasschatApp(App):
    TITLE = "glasschat"
    # A mode, not a pushed screen: the app mounts it (and its views) before it starts.
    MODES = {"chat": ChatScreen}
    DEFAULT_MODE = "chat"

    def __init__(
        self,
        options: EngineOptions,
        engine_factory: EngineFactory = Engine,
        recorder: Optional[ConversationRecorder] = None,
        store_problem: str = "",
        settings_file: Optional[SettingsFile] = None,
    ):
        super().__init__()
        self.settings_file = settings_file  # None: nothing is remembered (tests, benches)
        self.store_problem = store_problem
        self.conversation = Conversation(options)
        self.recorder = recorder
        self.inbox = EventInbox(lambda: self.post_message(EngineEventsWaiting()))  # before the engine can emit
        self.engine: ChatEngine = engine_factory(options, self._emit)
        self.views = list(view_table.VIEWS)  # read when the app is made, so a test can extend the table
        self.server = None  # an AppServer (chat/api/app_server.py) with --serve: started once the app runs
        self.taps: list[Callable[[Event], None]] = []  # also told every engine event, on the engine thread (--serve)

    @property
    def recorder(self) -> Optional[ConversationRecorder]:
        """What saves the conversation as it goes (None: nothing is saved: no database, or it can't be used)."""
        return self.conversation.saver

    @recorder.setter
    def recorder(self, recorder: Optional[ConversationRecorder]) -> None:
        if recorder is not None:
            recorder.on_problem = self._saving_failed
        self.conversation.saver = recorder

    @property
    def options(self) -> EngineOptions:
        """The options in force: the conversation's, as the engine last reported them."""
        return self.conversation.options

    def ask_options(self, **changes) -> None:
        """Ask the engine for changed options; the app takes them from its report (OptionsAdopted), never before."""
        self.engine.update(replace(self.options, **changes))

    def _emit(self, event: Event) -> None:
        # On the engine thread: into the inbox, which wakes the UI thread with a thread-safe post_message
        # (so the UI never waits on MLX).
        self.inbox.put(event)
        for tap in list(self.taps):  # the server's worker, reading its request's turn (chat/api/app_backend.py)
            tap(event)

    @property
    def chat(self) -> ChatScreen:
        """The chat screen: the bottom of the stack, under any dialog."""
        return self.screen_stack[0]

    def on_mount(self) -> None:
        # The engine thread needs the GIL briefly per token to queue the next
        # step; a shorter switch interval stops a long redraw from holding it.
        sys.setswitchinterval(0.001)
        self.sub_title = "loading the model…"
        self.conversation.reset()
        self.engine.start()
        if self.server is not None:
            self.server.start()
            self.title = f"glasschat · serving {self.server.url}"
        if self.settings_file is not None and self.settings_file.settings.theme:
            self.theme = self.settings_file.settings.theme
        self.theme_changed_signal.subscribe(self, lambda theme: self.remember(theme=theme.name))

    def remember(self, **values) -> None:
        """Keep settings the user changed for the next run; the file is written at once."""
        kept = self.settings_file
        if kept is None or all(getattr(kept.settings, name) == value for name, value in values.items()):
            return
        problem = kept.save(kept.settings.changed(**values))
        if problem:
            self.notify(problem, severity="warning")

    def _saving_failed(self, problem: str) -> None:
        """The store failed mid-chat: said once, and the chat goes on unsaved."""
        self.recorder = self.conversation.saver = None
        self.chat.show_store_problem(problem)

    def on_unmount(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.engine.shutdown(timeout=5.0)

    async def on_engine_events_waiting(self, _message: EngineEventsWaiting) -> None:
        for event in self.inbox.take():
            stack = self.screen_stack
            if stack and stack[0].is_attached:  # not while the app is closing
                await stack[0].router.route(event)

    def tokenizer(self) -> Optional[TextTokenizer]:
        """The model's tokenizer (Rust, not MLX: the UI thread may use it); None before the model loads."""
        text = self.engine.text()
        return text.tokenizer if text is not None else None

    def tokens_of_text(self, text: str) -> Optional[tuple[list[int], list[str]]]:
        """(ids, pieces) of a user message as the model reads it; None before the model loads."""
        tok = self.tokenizer()
        if tok is None:
            return None
        ids = tok.encode_text(tok.readable(text))
        return ids, [tok.piece(i) for i in ids]

    def tokens_of_ids(self, ids: list[int]) -> Optional[tuple[list[int], list[str]]]:
        tok = self.tokenizer()
        return (ids, [tok.piece(i) for i in ids]) if tok is not None else None

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.views))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, ChatScreen):
            yield from screen.commands()
