"""The chat screen's side of the conversation: what the user asks for, and one handler for each engine event.

The conversation (`app.conversation`) is the one owner of the tree and the options; the
engine only moves its cache. A request goes: plan it on the conversation, draw it in the
transcript, ask the engine (`ChatState` says when it may). Each engine event below has one
handler, and each handler calls its steps in order; the views draw their own events.
A branch request (regenerate, edit, fork, ←/→) waits for the reply under way (Esc stops it);
a saved reply shown without its steps is read again while a reply view is open, so the
confidence view can draw it and fork it.
"""

from collections.abc import Awaitable, Callable
from typing import Optional, Union

from model.errors import ModelError
from model.runtime.branches import ROOT
from model.runtime.conversation import Conversation, TurnInProgress
from model.runtime.events import (
    CacheHeld,
    ConversationReset,
    ModelFailed,
    ModelReady,
    OptionsAdopted,
    OptionsRefused,
    SwitchFailed,
    TurnEnded,
    TurnFailed,
)

from . import served_turn
from .api.app_backend import ServedTurn
from .chat_state import ChatState, Move, Phase
from .engine_view import EngineView, handles
from .found_message import FoundMessage, highlight
from .model_control import ModelControl
from .store import StoreError
from .widgets.transcript import Notice, Transcript
from .widgets.user_message import UserMessage

NEW_CHAT = "New conversation: the KV cache is empty."


class ChatControl(EngineView):
    def __init__(self, screen) -> None:
        self.screen = screen
        self.app = screen.app
        self.state = ChatState()
        # Messages typed while the engine was busy, and requests to the app's server (--serve), oldest first.
        self.queue: list[Union[tuple[str, UserMessage], ServedTurn]] = []
        self.scored: set[int] = set()  # saved replies asked to be read again (each once)
        self.models = ModelControl(self)

    @property
    def conversation(self) -> Conversation:
        return self.app.conversation

    @property
    def transcript(self) -> Transcript:
        return self.screen.transcript

    def notify(self, text: str, severity: str = "information") -> None:
        self.screen.notify(text, severity=severity)

    def _changed(self) -> None:
        """After every transition: the screen shows whether the engine is busy."""
        self.screen.show_busy(self.state.busy)

    # --- messages ----------------------------------------------------------------------

    async def submit(self, text: str, bubble: UserMessage) -> None:
        """A message the user sent (its bubble already shown): now, or when the engine is free."""
        if self.state.ready:
            await self._send(text, bubble)
        else:
            self.queue.append((text, bubble))
            self.screen.status.set_queued(len(self.queue))

    async def serve(self, served: ServedTurn) -> None:
        """A request to the app's server (from its worker, through call_from_thread): waits where typed messages do."""
        if self.state.ready and not self.queue:
            await served_turn.start(self, served)
        else:
            self.queue.append(served)
            self.screen.status.set_queued(len(self.queue))

    async def _send(self, text: str, bubble: UserMessage) -> None:
        await self._ask(lambda: self.conversation.follow(text), bubble)

    async def _ask(self, plan: Callable[[], TurnInProgress], bubble: Optional[UserMessage] = None) -> None:
        """Plan a turn on the conversation (a line for the user if it cannot be), draw it, and send it."""
        try:
            turn = plan()
        except ModelError as exc:
            self.notify(str(exc), severity="warning")
            if bubble is not None:
                await bubble.remove()
            return
        self.state.reply()
        self._changed()
        await self.transcript.begin(turn, bubble)
        self.app.engine.generate(self.conversation.request(turn))

    async def drain(self) -> None:
        """Once idle: what was asked meanwhile (a new or reopened conversation), else the next queued message."""
        action = self.state.take_deferred()
        if action is not None:
            await action()
        elif self.queue and self.state.ready:
            entry = self.queue.pop(0)
            self.screen.status.set_queued(len(self.queue))
            if isinstance(entry, ServedTurn):
                await served_turn.start(self, entry)
                if self.state.ready:  # withdrawn or refused: nothing was sent
                    await self.drain()
            else:
                await self._send(*entry)

    async def _when_idle(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run now if the engine is free; else stop the reply (it is kept and saved) and run once it has ended."""
        if self.state.ready:
            await action()
            return
        if self.state.phase is Phase.REPLYING:
            self.app.engine.cancel()
        self.state.deferred = action

    # --- branches ---------------------------------------------------------------------

    def _branch_ready(self) -> bool:
        """Branching waits for the reply under way (Esc stops it) and for the model."""
        if not self.state.ready:
            self.notify("Wait for the reply to finish (Esc stops it), then branch.", severity="warning")
            return False
        return True

    async def regenerate(self, turn_id: int) -> None:
        if self._branch_ready():
            await self._ask(lambda: self.conversation.regenerate(turn_id))

    async def fork(self, turn_id: int, at: int, token: int) -> None:
        if self._branch_ready():
            await self._ask(lambda: self.conversation.fork(turn_id, at, token))

    async def send_edit(self, text: str) -> None:
        """The edited message, as a new branch after the turn the original followed (the old one stays)."""
        tree = self.conversation.tree
        if self.state.editing not in tree.turns:  # the conversation changed under the edit
            self.screen.stop_editing()
            self.notify("That message is no longer in this conversation.", severity="warning")
            return
        if not self._branch_ready():  # the text stays in the box, still an edit
            return
        after = tree.get(self.state.editing).parent
        self.screen.stop_editing(clear=True)
        await self._ask(lambda: self.conversation.edit(after, text))

    def show_branch(self, turn_id: int, delta: int) -> None:
        """←/→ on a message with siblings: the cache follows to that path, then it is drawn."""
        target = self.conversation.tree.sibling(turn_id, delta)
        if target is not None and self._branch_ready():
            self._move(Move("branch", target), self.conversation.hold_request(target))

    def _move(self, move: Move, request) -> None:
        self.state.move(move)
        self._changed()
        self.app.engine.hold(request)

    def score_saved_replies(self) -> None:
        """While a reply view is open, replies shown without their steps (a saved chat's) are read again, so
        they can be drawn and forked like new ones (model.runtime.rescore); each is asked for once."""
        if self.transcript.reply_view is None:
            return
        for turn_id in self.transcript.unscored():
            if turn_id not in self.scored:
                self.scored.add(turn_id)
                self.app.engine.score(self.conversation.score_request(turn_id))

    # --- whole conversations ----------------------------------------------------------

    async def new_conversation(self, system: Optional[str] = None) -> None:
        """A new conversation (on `system`, or the options' system prompt); a reply under way is stopped first."""

        async def start() -> None:
            self.conversation.reset(system)
            self.scored = set()
            self.state.move(Move("new"))
            self._changed()
            self.app.engine.reset()

        await self._when_idle(start)

    async def open_saved(self, conversation_id: int, found: Optional[FoundMessage] = None) -> None:
        """A saved conversation shown, its whole tree, and the cache brought to its path (`found`: a search
        hit on that path, marked and scrolled to once drawn)."""

        async def reopen() -> None:
            self.screen.stop_editing()
            try:
                saved = self.app.recorder.open(conversation_id)
            except StoreError as exc:
                self.notify(str(exc), severity="error")
                return
            request = self.conversation.restore(saved.system, saved.turns, saved.current)
            self.scored = set()
            await self.transcript.show_path(saved.current, forget=True)
            if found is not None:
                highlight(self.transcript, found)
            self.screen.status.set_state("rebuilding the KV cache from the saved history…")
            self._move(Move("reopen", saved.current), request)

        await self._when_idle(reopen)

    def cancel(self) -> None:
        """Esc: leave an edit first; else stop a model's download, or the reply."""
        if self.state.editing is not None:
            self.screen.stop_editing(clear=True)
        elif self.state.loading:
            self.app.engine.cancel()
            self.screen.status.set_state("cancelling…")
        elif self.state.busy:
            self.app.engine.cancel()
            self.screen.status.set_state("stopping…")

    # --- the engine's events: one handler each ------------------------------------------

    @handles(ModelReady)
    async def model_ready(self, event: ModelReady) -> None:
        was_switch = self.state.model_ready()
        self._changed()
        self.conversation.attach(self.app.engine.text())
        await self.models.loaded(event, was_switch)
        await self.drain()

    @handles(ModelFailed)
    def model_failed(self, _event: ModelFailed) -> None:
        self.state.model_failed()
        self._changed()
        self.app.sub_title = "no model"

    @handles(SwitchFailed)
    async def switch_failed(self, event: SwitchFailed) -> None:
        self.state.switch_failed()
        self._changed()
        await self.models.failed(event)
        await self.drain()

    @handles(OptionsAdopted)
    async def options_adopted(self, event: OptionsAdopted) -> None:
        if self.models.adopt(event):  # a new cache, or a new system prompt: a new conversation
            self.screen.stop_editing()
            self.conversation.reset()
            self.scored = set()
            await self.transcript.start_over(NEW_CHAT + self._system_note())

    @handles(OptionsRefused)
    async def options_refused(self, event: OptionsRefused) -> None:
        await self.transcript.add(Notice(f"{event.message} The settings stay as they were.", "error"))

    @handles(TurnEnded)
    async def turn_ended(self, event: TurnEnded) -> None:
        self.conversation.ended(event)  # on the tree, and saved, before the transcript marks its branches
        self.state.idle()
        self._changed()
        await self.drain()

    @handles(TurnFailed)
    async def turn_failed(self, event: TurnFailed) -> None:
        self.conversation.failed(event.turn_id)
        self.state.idle()
        self._changed()
        await self.drain()

    @handles(ConversationReset)
    async def conversation_reset(self, _event: ConversationReset) -> None:
        self.screen.stop_editing()  # a new conversation has no message to edit; the text stays in the box
        await self.transcript.start_over(NEW_CHAT + self._system_note())
        self.state.idle()
        self._changed()
        await self.drain()

    @handles(CacheHeld)
    async def cache_held(self, event: CacheHeld) -> None:
        move = self.state.idle()
        self._changed()
        if move is not None and move.reason == "branch":
            self.conversation.show(move.showing)
            await self.transcript.show_path(move.showing)
            if move.showing != ROOT or event.prompt_tokens:
                line = f"Branch: {event.prompt_tokens} tokens prefilled, {event.reused_tokens} reused from the cache"
                await self.transcript.add(Notice(f"{line}, in {event.seconds:.1f} s."))
        elif move is not None and move.reason == "reopen":
            self.conversation.show(move.showing)
            messages = 2 * len(self.conversation.tree.path())
            line = f"Restored {messages} messages: {event.prompt_tokens} tokens prefilled"
            await self.transcript.add(Notice(f"{line} in {event.seconds:.1f} s to rebuild the cache."))
        self.score_saved_replies()
        await self.drain()

    def _system_note(self) -> str:
        system = self.conversation.system
        return f" System prompt: {system}" if system else ""
