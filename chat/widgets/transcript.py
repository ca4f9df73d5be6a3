"""The conversation: user messages, replies streamed in as Markdown, and notices.

The transcript is anchored to the bottom and lets go when the user scrolls up
to read; scrolling back to the end re-attaches it. It shows one path of the
conversation's tree, which the conversation owns (`app.conversation`); it keeps
only what it saw of each reply (`branch_paths.ReplySteps`).
"""

from typing import Optional

from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from model.runtime.branches import TurnTree
from model.runtime.conversation import TurnInProgress
from model.runtime.events import (
    ModelFailed,
    ModelReady,
    ReplyScored,
    TokenGenerated,
    TurnEnded,
    TurnFailed,
    TurnStarted,
)

from ..engine_view import EngineView, draws, handles
from .branch_paths import ReplySteps, draw_path, mark_branches
from .confidence import SampledStep
from .reply_message import AssistantMessage, show_twin
from .thinking_fold import ThinkingFold
from .user_message import UserMessage
from .welcome import Welcome


class Notice(Static):
    DEFAULT_CSS = """
    Notice { color: $text-muted; padding: 0 1; margin: 1 0 0 0; }
    Notice.error { color: $error; }
    Notice.warning { color: $warning; }
    """

    def __init__(self, text: str, kind: str = ""):
        super().__init__(text, markup=False, classes=kind)


class Transcript(EngineView, VerticalScroll):
    DEFAULT_CSS = """
    Transcript { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
    Transcript .found { background: $warning 25%; border-left: thick $warning; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.reply: Optional[AssistantMessage] = None  # the reply being written
        self.reply_view: Optional[type] = None  # drawn in place of each reply while on (confidence colouring)
        self._pending = ""  # reply text not yet drawn
        self.fold: Optional[ThinkingFold] = None  # the reply's thinking, if it thinks
        self._pending_thought = ""
        self._thinking_tokens = 0
        self.model_info: dict = {}  # for the welcome
        self.seen = ReplySteps()  # what was shown of each reply
        self.sent: Optional[TurnInProgress] = None  # the turn being written

    def compose(self):
        yield Welcome()

    def on_mount(self) -> None:
        self.anchor()

    @property
    def tree(self) -> TurnTree:
        return self.app.conversation.tree

    @property
    def welcome(self) -> Optional[Welcome]:
        """The first screen, while the conversation has no message yet."""
        found = self.query(Welcome)
        return found.first() if found else None

    async def add(self, widget: Widget) -> None:
        await self.mount(widget)

    def last_reply(self) -> AssistantMessage | None:
        replies = self.query(AssistantMessage)
        return replies.last() if replies else None

    async def show_replies_as(self, view: Optional[type]) -> bool:
        """Draw every reply as `view` (None: as Markdown again); False if some reply has no steps to draw it from."""
        self.reply_view = view
        replies = list(self.query(AssistantMessage))
        for reply in replies:
            await show_twin(reply, view)
        return all(r.steps for r in replies)

    async def begin(self, turn: TurnInProgress, bubble: Optional[UserMessage] = None) -> None:
        """A turn sent: the message the user typed takes its id, or (a branch) the path to where it branches is
        drawn again with its message under it."""
        self.sent = turn
        if bubble is not None:
            bubble.mark_sent(turn.turn_id)
        else:
            await self.show_path(turn.parent)
            await self.add(UserMessage(turn.user, turn_id=turn.turn_id))

    async def show_path(self, turn_id: int, forget: bool = False) -> None:
        """The path from the root to `turn_id`, in place of what was shown; `forget`: another conversation's."""
        self.reply = None
        self._pending = ""
        if forget:
            self.seen = ReplySteps()
        await draw_path(self, self.tree, turn_id, self.seen, self.reply_view)

    # --- engine events ----------------------------------------------------------

    @handles(ModelReady)
    async def model_ready(self, event: ModelReady) -> None:
        self.model_info = event.info
        if self.welcome is not None:
            self.welcome.set_model(event.info)
        if event.info.get("blas_note"):  # matrix products run slower than this machine allows
            await self.add(Notice(event.info["blas_note"], "warning"))

    @handles(ModelFailed)
    async def failed_to_load(self, event: ModelFailed) -> None:
        await self.add(Notice(event.message, "error"))

    @handles(TurnStarted)
    async def started(self, event: TurnStarted) -> None:
        turn = self.sent if self.sent is not None and self.sent.turn_id == event.turn_id else None
        if event.note:
            await self.add(Notice(event.note, "warning"))
        self.fold, self._pending_thought, self._thinking_tokens = None, "", 0
        self.reply = AssistantMessage(event.prefix_text, turn_id=event.turn_id)
        self.reply.steps = self.seen.fork_start(turn, event.prefix_text) if turn is not None else []
        await self.add(self.reply)
        if self.reply_view is not None:  # the twin shares the reply's step list, so it fills as the reply streams
            await show_twin(self.reply, self.reply_view, live=True)

    @handles(TokenGenerated)
    def token(self, event: TokenGenerated) -> None:
        if self.reply is None:
            return
        if event.thinking:
            self._thinking_tokens += 1
            self._pending_thought += event.text
            return
        # An append: the reply views draw from it when shown.
        self.reply.steps.append(SampledStep(event.token_id, event.text, event.prob, event.top_k, event.drafted))
        if self._thinking_tokens and not self.reply.text and not self._pending:
            event_text = event.text.lstrip("\n")  # the blank line after </think> separates, it is not the answer
        else:
            event_text = event.text
        self._pending += event_text  # drawn with the panels: each Markdown append costs a parse and a layout

    @draws(TokenGenerated)
    async def flush(self, _event: Optional[TokenGenerated] = None) -> None:
        if self.reply is None or not self.reply.is_attached:
            return
        await self._flush_thought()
        text, self._pending = self._pending, ""
        if text:
            if self.fold is not None:
                self.fold.fold(self._thinking_tokens)  # the answer has begun
            await self.reply.add(text)

    async def _flush_thought(self) -> None:
        thought, self._pending_thought = self._pending_thought, ""
        if not self._thinking_tokens:
            return
        if self.fold is None:
            self.fold = ThinkingFold()
            await self.mount(self.fold, before=self.reply)
        if thought:
            self.fold.add(thought)

    @draws(TokenGenerated, heavy=True)
    def redraw_twin(self, _event: TokenGenerated) -> None:
        if self.reply is not None and self.reply.twin is not None:
            self.reply.twin.redraw()

    @handles(TurnEnded)
    async def ended(self, event: TurnEnded) -> None:
        """The reply is done (the conversation has it on its tree by now: the screen takes this event first)."""
        await self.flush()
        self.sent = None
        if self.reply is not None:
            self.seen.steps[event.turn_id] = self.reply.steps
        if event.stats.thinking_tokens:
            self.seen.thoughts[event.turn_id] = (event.thinking, event.stats.thinking_tokens)
        mark_branches(self.tree, self.query(UserMessage))
        if self.fold is not None:
            self.fold.fold(event.stats.thinking_tokens)
        if self.reply is not None:
            self.reply.token_ids = event.reply_ids
            await self.reply.finish(event.text, event.stats.stop_reason)
            if self.reply.twin is not None:
                self.reply.twin.redraw(force_layout=True)
        self.reply = None

    @handles(TurnFailed)
    async def turn_failed(self, event: TurnFailed) -> None:
        await self.flush()
        self.sent = None
        if self.reply is not None:
            await self.reply.finish(self.reply.text, "cancelled")
            self.reply = None
        await self.add(Notice(event.message, "error"))

    def unscored(self) -> list[int]:
        """The turns of the replies shown without their steps (a saved chat's): they cannot be forked as they are."""
        return [
            r.turn_id
            for r in self.query(AssistantMessage)
            if not r.steps and r.token_ids and r.turn_id in self.tree.turns
        ]

    @handles(ReplyScored)
    async def scored(self, event: ReplyScored) -> None:
        steps = [SampledStep(*step) for step in event.steps]
        self.seen.steps[event.turn_id] = steps
        for reply in self.query(AssistantMessage):
            if reply.turn_id == event.turn_id and not reply.steps:
                reply.steps = steps
                if self.reply_view is not None:
                    await show_twin(reply, self.reply_view)

    async def start_over(self, notice: str, model_info: Optional[dict] = None) -> None:
        """An empty transcript with one notice and the welcome (for `model_info`, or the model in use)."""
        if model_info is not None:
            self.model_info = model_info
        self.reply = self.fold = self.sent = None
        self._pending = self._pending_thought = ""
        self.seen = ReplySteps()
        await self.remove_children()
        await self.add(Notice(notice))
        await self.add(Welcome(self.model_info))
