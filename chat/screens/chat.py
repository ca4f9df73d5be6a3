"""The chat: the transcript, the status line and the prompt, with the views beside them.

The views come from the table in `chat/views.py`: this screen lays them out, binds
their keys, lists them in the palette and tells the engine what the open ones need.
Engine events reach the views and the transcript through the router; the screen's
own side of the conversation (sending, queueing, branching, stopping, reopening) is
its control (`chat/chat_control.py`), where each engine event has one handler.
"""

from collections.abc import Iterable
from functools import reduce
from operator import or_
from typing import Optional

from textual import events
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header

from model.internals.needs import StepNeeds

from .. import attach_form, found_message, preset_forms, settings_forms
from ..chat_control import ChatControl
from ..chat_state import Phase
from ..messages import BranchPicked, EditPicked, ForkPicked, NeedsChanged, PromptSubmitted
from ..router import Router
from ..store import StoreError
from ..views import ViewSpec
from ..widgets.composer import Composer
from ..widgets.download_bar import DownloadBar
from ..widgets.prompt_input import PromptInput
from ..widgets.side_column import SideColumn
from ..widgets.status_line import StatusLine
from ..widgets.transcript import Notice, Transcript
from ..widgets.user_message import UserMessage
from ..widgets.welcome import Welcome, example_for
from .conversations import ConversationsScreen
from .model_info import ModelInfoScreen, settings_table

NARROW = 110  # below this many columns the panels give way to a one-line summary


class ChatScreen(Screen):
    DEFAULT_CSS = """
    #main { height: 1fr; }
    #chat-column { width: 1fr; }
    ChatScreen.narrow #sidebar { display: none; }
    """
    # In the footer's order. Ctrl+Q is Textual's own, shown here; priority, so the app's hidden one does not replace it.
    BINDINGS = [
        Binding("ctrl+q", "app.quit", "Quit", priority=True),
        Binding("escape", "cancel_reply", "Stop reply"),
        Binding("ctrl+n", "new_conversation", "New chat"),
        Binding("ctrl+o", "conversations", "Chats"),
        # Ctrl+M is Enter (a carriage return) unless the terminal speaks the kitty keyboard
        # protocol (kitty, WezTerm, foot, Ghostty): there it opens the screen too; Ctrl+L works everywhere.
        Binding("ctrl+l,ctrl+m", "models", "Models"),
        Binding("ctrl+y", "copy_last_reply", "Copy reply"),
        Binding("ctrl+r", "regenerate", "Regenerate", show=False),
        Binding("f1", "app.help", "Help"),
        Binding("question_mark", "app.help", "Help", show=False),
        Binding("ctrl+t", "toggle_ids", "Token ids", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        views: list[ViewSpec] = self.app.views
        self.views = {spec.id: spec for spec in views}
        saved = self.app.settings_file.settings.views if self.app.settings_file is not None else None
        self.open = {spec.id: spec.shown if saved is None else spec.id in saved for spec in views}
        # Kept, not queried: the per-token routing touches them without a DOM query.
        self.panels = {spec.id: spec.build() for spec in views if spec.place == "sidebar"}
        for view_id, panel in self.panels.items():
            panel.display = self.open[view_id]
        self.transcript = Transcript(id="transcript")
        self.status = StatusLine(id="status")
        self.download = DownloadBar(id="download")
        for spec in views:
            # priority: the prompt box (a TextArea) binds F6 to "select line".
            self._bindings.bind(spec.key, f"toggle_view('{spec.id}')", spec.title, show=False, priority=True)
        self.control = ChatControl(self)
        # The control first: a turn is on the conversation's tree before the transcript marks its branches.
        receivers = [self.control, *self.panels.values(), self.status, self.download, self.transcript]
        self.router = Router(self, receivers)
        self._blink = True  # the prompt cursor's blink setting, kept while a reply pauses it
        self._busy = False
        self._asked = StepNeeds(top_k=self.app.options.top_k_shown)  # what the engine was last told (its start)

    # --- what the tests and the UI bench read --------------------------------------

    @property
    def ready(self) -> bool:
        return self.control.state.ready

    @property
    def busy(self) -> bool:
        """A reply (or a cache rebuild) is running."""
        return self.control.state.busy

    @property
    def switching(self) -> bool:
        return self.control.state.phase is Phase.SWITCHING

    @property
    def editing(self) -> Optional[int]:
        return self.control.state.editing

    @property
    def queue(self) -> list:
        return self.control.queue

    @property
    def model_info(self) -> dict:
        return self.control.models.info

    def show_busy(self, busy: bool) -> None:
        """The blinking cursor repaints the screen twice a second; while the engine decodes, every repaint takes
        CPU from it. It blinks again after, and time between replies is not redraw time."""
        if self.is_mounted and busy != self._busy:
            prompt = self.query_one(PromptInput)
            if busy:
                self._blink, prompt.cursor_blink = prompt.cursor_blink, False
            else:
                prompt.cursor_blink = self._blink
        if not busy:
            self.router.pacer.idle()
        self._busy = busy

    # --- layout --------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="main"):
            with Vertical(id="chat-column"):
                yield self.transcript
                yield self.download
                yield self.status
                yield Composer(PromptInput(id="prompt", history=self.earlier_messages), id="composer")
            yield SideColumn(*self.panels.values(), id="sidebar")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(PromptInput).focus()
        self._apply_width(self.app.size.width)
        if self.app.store_problem:
            self.call_later(self._show_store_problem, self.app.store_problem)
        self.call_later(self._open_saved_views)

    async def _open_saved_views(self) -> None:
        """The reply views the settings file left open, what the engine must compute for them, and its problems."""
        for view_id, spec in self.views.items():
            if spec.place == "reply" and self.open[view_id]:
                await self.transcript.show_replies_as(spec.widget)
        self.tell_engine()
        if self.app.settings_file is not None:
            for problem in self.app.settings_file.problems:
                await self.transcript.add(Notice(problem, "warning"))

    def on_resize(self, event: events.Resize) -> None:
        self._apply_width(event.size.width)

    def on_screen_resume(self) -> None:
        self._apply_width(self.app.size.width)  # the terminal may have been resized under a dialog

    def _apply_width(self, width: int) -> None:
        narrow = width < NARROW
        self.set_class(narrow, "narrow")
        self.status.set_class(narrow, "with-summary")

    def show_store_problem(self, problem: str) -> None:
        self.call_later(self._show_store_problem, problem)

    async def _show_store_problem(self, problem: str) -> None:
        await self.transcript.add(Notice(f"{problem} This chat will not be saved.", "warning"))

    # --- the views -------------------------------------------------------------

    async def action_toggle_view(self, view_id: str) -> None:
        await self.show_view(view_id, not self.open[view_id])

    async def show_view(self, view_id: str, on: bool) -> None:
        """Open or close a view; a closed one is not drawn and costs the engine nothing."""
        spec = self.views[view_id]
        self.open[view_id] = on
        if spec.place == "sidebar":
            # Focus stays where it is (usually the prompt, so typing goes on).
            self.panels[view_id].display = on
        elif not await self.transcript.show_replies_as(spec.widget if on else None) and on:
            self.control.score_saved_replies()
        self.tell_engine()
        self.app.remember(views=[view_id for view_id, shown in self.open.items() if shown])

    def on_needs_changed(self, _message: NeedsChanged) -> None:
        self.tell_engine()

    def tell_engine(self) -> None:
        """What the open views need at each step, merged: one value; the engine is told only when it changes."""
        opened = (spec.needs(self.panels.get(view_id)) for view_id, spec in self.views.items() if self.open[view_id])
        needs = reduce(or_, opened, StepNeeds())
        asked = StepNeeds(
            top_k=self.app.options.top_k_shown if needs.top_k else 0,
            attention_layer=needs.attention_layer,
            lens_layers=needs.lens_layers,
        )
        if asked != self._asked:
            self.app.engine.set_needs(asked)
            self._asked = asked

    def commands(self) -> Iterable[SystemCommand]:
        """The palette's entries for this screen."""
        app = self.app
        yield SystemCommand("New conversation", "Clear the chat and its KV cache", self.action_new_conversation)
        yield SystemCommand("Conversations", "Open, rename, delete or export saved chats", self.action_conversations)
        yield SystemCommand(
            "Models",
            "Ctrl+L: load another model (on disk, in the Hub cache, or a Hub id) in a new conversation",
            self.action_models,
        )
        yield SystemCommand(
            "System prompt",
            "Set the system prompt (starts a new conversation)",
            lambda: settings_forms.edit_system_prompt(app),
        )
        yield SystemCommand(
            "Sampling settings", "Temperature, top-k, top-p, min-p", lambda: settings_forms.edit_sampling(app)
        )
        yield from preset_forms.commands(app)
        yield from attach_form.commands(app)
        yield SystemCommand(
            "Prompt lookup: auto, on, off",
            "Guess tokens from the conversation, verify them in one pass: the same reply, faster when it quotes",
            lambda: settings_forms.toggle_lookup(app),
        )
        yield SystemCommand(
            "Cache size",
            "KV cache capacity and sink (starts a new conversation)",
            lambda: settings_forms.edit_cache(app),
        )
        for spec in self.views.values():
            yield SystemCommand(
                f"Show/hide the {spec.title} view",
                f"{spec.key.upper()}: {spec.caption}",
                lambda view_id=spec.id: self.action_toggle_view(view_id),
            )
        yield SystemCommand("Token ids", "Show token ids in the Next token panel", self.action_toggle_ids)
        yield self.control.models.thinking_command()
        yield SystemCommand(
            "Model info",
            "Architecture, layers, heads, parameters, weights, backend, this run's settings",
            self.action_model_info,
        )
        yield SystemCommand("Copy last reply", "Copy the last reply to the clipboard", self.action_copy_last_reply)
        yield SystemCommand(
            "Regenerate",
            "Ctrl+R: a new reply to the focused reply's message (the last one by default), with the sampling now set",
            self.action_regenerate,
        )
        yield SystemCommand(
            "Edit message",
            "E on a message: edit it in the box; sending makes a new branch from there (the last message by default)",
            self.action_edit_message,
        )

    def action_toggle_ids(self) -> None:
        self.panels["topk"].toggle_ids()

    def action_model_info(self) -> None:
        info = self.model_info or {"source": "still loading"}
        self.app.push_screen(ModelInfoScreen(info, settings_table(self.app.options, self.app.settings_file)))

    # --- the user's side -----------------------------------------------------

    async def on_prompt_submitted(self, message: PromptSubmitted) -> None:
        text = message.text
        if not text.strip():
            self.notify("Type a message first: empty messages are not sent.", severity="warning")
            return
        if self.editing is not None:
            await self.control.send_edit(text)
            return
        self.query_one(PromptInput).clear()
        welcome = self.transcript.welcome
        if welcome is not None:
            text = example_for(text) or text  # "1" and Enter picks the first example
            await welcome.remove()
        bubble = UserMessage(text, queued=not self.ready)
        await self.transcript.add(bubble)
        await self.control.submit(text, bubble)

    def earlier_messages(self) -> list[str]:
        """For ↑ in the prompt box: this conversation's messages, newest first, then older ones saved."""
        mine = [m.text for m in reversed(self.transcript.query(UserMessage))]
        if self.app.recorder is None:
            return mine
        try:
            return mine + self.app.recorder.older_messages()
        except StoreError:
            return mine

    async def on_welcome_picked(self, message: Welcome.Picked) -> None:
        await self.on_prompt_submitted(PromptSubmitted(message.text))

    def action_cancel_reply(self) -> None:
        self.control.cancel()

    async def action_new_conversation(self, system: Optional[str] = None) -> None:
        await self.control.new_conversation(system)

    async def open_saved(self, conversation_id: int) -> None:
        """A saved conversation shown (every branch), its path read into the cache."""
        await self.control.open_saved(conversation_id)

    def action_conversations(self) -> None:
        if self.app.recorder is None:
            self.notify(self.app.store_problem or "Saving is off: there is no database.", severity="warning")
            return

        async def chosen(result: Optional[tuple[str, int]]) -> None:
            if result is None:
                return
            kind, value = result
            if kind == "new":
                await self.control.new_conversation()
            elif kind == "open":
                await self.control.open_saved(value)
            elif kind == "found":
                await found_message.open_found(self, *value)

        self.app.push_screen(ConversationsScreen(self.app.recorder.store), chosen)

    def action_models(self) -> None:
        self.control.models.pick()

    def action_copy_last_reply(self) -> None:
        reply = self.transcript.last_reply()
        if reply is None:
            self.notify("No reply to copy yet.")
            return
        reply.action_copy()

    # --- branches: the keys and the palette, on the message or reply in focus ----------------

    async def action_regenerate(self) -> None:
        """A new reply to the focused reply's message, or to the last message shown."""
        # A reply, its tinted twin and a user message all know their turn.
        turn_id = getattr(self.focused, "turn_id", None)
        turn_id = turn_id if turn_id is not None else self.app.conversation.tree.current
        if not turn_id:
            self.notify("Nothing to regenerate yet: send a message first.")
            return
        await self.control.regenerate(turn_id)

    def action_edit_message(self) -> None:
        """Edit the focused message, or the last one shown."""
        focused = self.focused if isinstance(self.focused, UserMessage) else None
        shown = [m for m in self.transcript.query(UserMessage) if m.turn_id is not None]
        target = focused or (shown[-1] if shown else None)
        if target is None:
            self.notify("Nothing to edit yet: send a message first.")
            return
        self.on_edit_picked(EditPicked(target))

    def on_edit_picked(self, message: EditPicked) -> None:
        """The message's text in the prompt box; sending it makes a new branch from the turn before it."""
        target = message.message
        if target.turn_id not in self.app.conversation.tree.turns:
            self.notify("This message has not reached the model yet: it cannot be edited.", severity="warning")
            return
        number = list(self.transcript.query(UserMessage)).index(target) + 1
        self.control.state.edit(target.turn_id)
        self.query_one(PromptInput).start_editing(target.text, f"editing message {number} · Esc cancels")

    def stop_editing(self, clear: bool = False) -> None:
        if self.control.state.editing is None:
            return
        self.control.state.stop_editing()
        prompt = self.query_one(PromptInput)
        prompt.stop_editing()
        if clear:
            prompt.clear()

    async def on_fork_picked(self, message: ForkPicked) -> None:
        await self.control.fork(message.turn_id, message.at, message.token)

    def on_branch_picked(self, message: BranchPicked) -> None:
        self.control.show_branch(message.turn_id, message.delta)
