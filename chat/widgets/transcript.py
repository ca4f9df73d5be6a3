"""The conversation: user messages, replies streamed in as Markdown, and notices.

Replies grow with `Markdown.append`, which parses only the new lines and
updates the last block instead of re-parsing the whole message per token
(what `MarkdownStream` does too; the text is batched until the paced redraw,
and appending there keeps each batch in the same screen update as the panels).
The transcript is anchored to the bottom and lets go when the user scrolls up
to read; scrolling back to the end re-attaches it.

A single newline in a reply is a line break, as chat UIs render it (oterm,
llama.cpp's web UI): plain Markdown would join a poem's lines into one
paragraph. Code blocks and tables keep their own layout, and the reply's text
(what Copy gives) is never changed: only the parser differs.
"""

from typing import Optional

from markdown_it import MarkdownIt
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Markdown, Static

from model.runtime.branches import ROOT, Turn, TurnTree
from model.runtime.events import (
    BranchSwitched,
    ConversationReset,
    HistoryRestored,
    ModelFailed,
    ModelReady,
    TokenGenerated,
    TurnEnded,
    TurnFailed,
    TurnStarted,
)

from ..engine_view import EngineView, draws, handles
from ..messages import BranchPicked
from .confidence import SampledStep
from .thinking_fold import ThinkingFold
from .token_chips import TokenChips
from .welcome import Welcome


class UserMessage(Static, can_focus=True):
    DEFAULT_CSS = """
    UserMessage {
        background: $boost;
        border-left: thick $accent;
        padding: 0 1;
        margin: 1 0 0 0;
    }
    UserMessage.queued { border-left: thick $warning; color: $text-muted; }
    UserMessage:focus { background: $accent 20%; }
    """
    BINDINGS = [
        ("c", "copy", "Copy"),
        ("t", "tokens", "Tokens"),
        Binding("left", "branch(-1)", "Previous branch", show=False),
        Binding("right", "branch(1)", "Next branch", show=False),
    ]

    def __init__(self, text: str, queued: bool = False, turn: Optional[int] = None):
        # Plain text: what a user types is never read as markup.
        super().__init__(text, markup=False, classes="queued" if queued else "")
        self.text = text
        self.turn = turn  # the engine's turn this message opened, once it reached the engine
        self.branch: Optional[tuple[int, int]] = None  # (which, of how many) among its siblings, when it has some
        self.border_subtitle = "queued" if queued else None

    def show_branch(self, which: int, count: int) -> None:
        """`‹ 2/3 ›` under the message when it has siblings (a regenerate or an edit made them)."""
        self.branch = (which, count) if count > 1 else None
        if self.branch is None:
            self.update(Text(self.text))
            return
        arrows = Text.assemble(
            ("‹", Style(bold=True, meta={"branch": -1})),
            (f" {which}/{count} ", "dim"),
            ("›", Style(bold=True, meta={"branch": 1})),
        )
        self.update(Text.assemble(self.text, "\n", arrows))

    def action_branch(self, delta: int) -> None:
        if self.branch is not None and self.turn is not None:
            self.post_message(BranchPicked(self.turn, delta))

    def on_click(self, event: events.Click) -> None:
        delta = event.style.meta.get("branch") if event.style else None
        if delta is not None:
            self.action_branch(delta)

    def mark_sent(self) -> None:
        self.remove_class("queued")
        self.border_subtitle = None

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.notify("Message copied to the clipboard.")

    async def action_tokens(self) -> None:
        await toggle_chips(self, self.app.tokens_of_text(self.text))


def _keep_line_breaks(state) -> None:
    """A markdown-it core rule: every soft break inside a paragraph becomes a hard one."""
    # Fenced code and table cells have no soft breaks, so they are untouched.
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


def chat_markdown_parser() -> MarkdownIt:
    """Textual's own "gfm-like" parser, with line breaks kept. Streaming appends use it too."""
    parser = MarkdownIt("gfm-like")
    parser.core.ruler.push("keep_line_breaks", _keep_line_breaks)
    return parser


class AssistantMessage(Markdown, can_focus=True):
    DEFAULT_CSS = """
    AssistantMessage {
        border-left: thick $success;
        padding: 0 1;
        margin: 1 0 0 0;
        background: transparent;
    }
    AssistantMessage.cancelled { border-left: thick $warning; }
    AssistantMessage > *:last-child { margin-bottom: 0; }
    AssistantMessage:focus { background: $success 10%; }
    """
    BINDINGS = [("c", "copy", "Copy"), ("t", "tokens", "Tokens")]

    def __init__(self, text: str = "", token_ids: tuple = (), turn: Optional[int] = None):
        super().__init__(text, parser_factory=chat_markdown_parser)
        self.text = text
        self.turn = turn  # the engine's turn this reply belongs to (None: from a saved chat)
        self.token_ids = token_ids  # the reply as sampled, once it has ended
        self.steps: list[SampledStep] = []  # each generated token with its probability and top-k (live replies only)
        self.twin = None  # a reply view drawn in its place (confidence colouring), while it is on

    async def action_tokens(self) -> None:
        await toggle_chips(self, self.app.tokens_of_ids(list(self.token_ids)))

    async def add(self, fragment: str) -> None:
        self.text += fragment
        if self.twin is None:
            await self.append(fragment)
        # else: the tinted twin is on screen; `finish` renders the whole text once.

    async def finish(self, text: str, stop_reason: str) -> None:
        self.text = text
        if stop_reason == "cancelled":
            self.add_class("cancelled")
            self.border_subtitle = "cancelled"
        elif stop_reason == "length":
            self.border_subtitle = "stopped at --max-tokens"
        # One full parse at the end, so every block is exactly right.
        await self.update(text)

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.notify("Reply copied to the clipboard.")


async def show_twin(reply: AssistantMessage, view: Optional[type], live: bool = False) -> None:
    """Swap a reply for a view built from its steps, or back (`view` None; replies without recorded steps stay)."""
    if view is not None and reply.twin is None and (reply.steps or live):
        reply.twin = view(reply.steps)
        reply.twin.turn = reply.turn
        await reply.parent.mount(reply.twin, after=reply)
        reply.display = False
    elif view is None and reply.twin is not None:
        await reply.twin.remove()
        reply.twin = None
        reply.display = True
        if reply.text:
            await reply.update(reply.text)  # it was not appended to while the twin was shown


async def toggle_chips(message: Widget, tokens: Optional[tuple[list[int], list[str]]]) -> None:
    """Show the message's tokens under it, or hide them again."""
    siblings = list(message.parent.children)
    index = siblings.index(message)
    following = siblings[index + 1] if index + 1 < len(siblings) else None
    if isinstance(following, TokenChips):
        await following.remove()
        return
    if tokens is None:
        message.notify("Tokens can be shown once the model has loaded.")
        return
    await message.parent.mount(TokenChips(*tokens), after=message)


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
        # The conversation's turns as the engine reported them, to draw any path of the tree again.
        self.turn_tree = TurnTree()
        self.steps: dict[int, list[SampledStep]] = {}  # each turn's reply steps
        self.stop_reasons: dict[int, str] = {}
        self.started_event: Optional[TurnStarted] = None  # the turn being written

    def compose(self):
        yield Welcome()

    def on_mount(self) -> None:
        self.anchor()

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

    async def load(self, stored: list) -> None:
        """A saved conversation's messages, in place of what was shown."""
        # Its turns are not this session's: they cannot be branched from here yet.
        self.turn_tree, self.steps, self.stop_reasons, self.started_event = TurnTree(), {}, {}, None
        await self.remove_children()
        for m in stored:
            if m.role == "user":
                await self.add(UserMessage(m.content))
            elif m.role == "assistant":
                reply = AssistantMessage(m.content, tuple(m.token_ids or ()))
                await self.add(reply)
                if m.status == "cancelled":
                    reply.add_class("cancelled")

    # --- engine events ----------------------------------------------------------

    @handles(ModelReady)
    def model_ready(self, event: ModelReady) -> None:
        self.model_info = event.info
        if self.welcome is not None:
            self.welcome.set_model(event.info)

    @handles(ModelFailed)
    async def failed_to_load(self, event: ModelFailed) -> None:
        await self.add(Notice(event.message, "error"))

    @handles(ModelReady)
    async def loaded(self, event: ModelReady) -> None:
        if event.info.get("blas_note"):  # matrix products run slower than this machine allows
            await self.add(Notice(event.info["blas_note"], "warning"))

    @handles(TurnStarted)
    async def started(self, event: TurnStarted) -> None:
        self.started_event = event
        parent = self.turn_tree.current if event.parent is None else event.parent
        if parent != self.turn_tree.current and self._known(parent):
            # A regenerate, an edit or a fork: the path to where it branches, then its message.
            await self.show_path(parent)
            await self.add(UserMessage(event.user, turn=event.turn))
        else:
            bubble = next((m for m in self.query(UserMessage) if m.turn is None), None)
            if bubble is not None:  # the message the user sent (queued ones follow it)
                bubble.turn = event.turn
        if event.note:
            await self.add(Notice(event.note, "warning"))
        self.fold, self._pending_thought, self._thinking_tokens = None, "", 0
        self.reply = AssistantMessage(event.prefix_text, turn=event.turn)
        self.reply.steps = self._fork_start(event)
        await self.add(self.reply)
        if self.reply_view is not None:  # the twin shares the reply's step list, so it fills as the reply streams
            await show_twin(self.reply, self.reply_view, live=True)

    def _known(self, parent: Optional[int]) -> bool:
        """A turn this transcript can draw a path to (a saved chat's restored turns are not among them)."""
        return parent is None or parent == ROOT or parent in self.turn_tree.turns

    def _fork_start(self, event: TurnStarted) -> list[SampledStep]:
        """A fork's reply starts with the forked reply's steps before the cut, then the forced token's."""
        if event.forked_at is None:
            return []
        forked = next(
            (n for n, t in self.turn_tree.turns.items() if t.reply_ids[: event.forked_at] == event.reply_prefix[:-1]),
            None,
        )
        steps = self.steps.get(forked, [])
        if len(steps) <= event.forked_at:
            return []
        at = steps[event.forked_at]
        forced = next((t for t in at.top_k if t.id == event.token_forced), None)
        text = (
            forced.text
            if forced is not None
            else event.prefix_text[len("".join(s.text for s in steps[: event.forked_at])) :]
        )
        return steps[: event.forked_at] + [
            SampledStep(event.token_forced, text, forced.prob if forced else 0.0, at.top_k)
        ]

    @handles(TokenGenerated)
    def token(self, event: TokenGenerated) -> None:
        if self.reply is None:
            return
        if event.thinking:
            self._thinking_tokens += 1
            self._pending_thought += event.text
            return
        # An append: the reply views draw from it when shown.
        self.reply.steps.append(SampledStep(event.token_id, event.text, event.prob, event.top_k))
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
        await self.flush()
        started, self.started_event = self.started_event, None
        parent = None if started is None or started.parent is None else started.parent
        if started is not None and started.turn == event.turn and self._known(parent):
            parent = self.turn_tree.current if parent is None else parent
            self.turn_tree.add(
                Turn(
                    event.turn,
                    parent,
                    started.user,
                    event.reply_ids,
                    event.text,
                    started.forked_at,
                    started.token_forced,
                )
            )
            self.stop_reasons[event.turn] = event.stats.stop_reason
            if self.reply is not None:
                self.steps[event.turn] = self.reply.steps
            self.mark_branches()
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
        if self.reply is not None:
            await self.reply.finish(self.reply.text, "cancelled")
            self.reply = None
        await self.add(Notice(event.message, "error"))

    @handles(BranchSwitched)
    async def switched(self, event: BranchSwitched) -> None:
        await self.show_path(event.turn)
        if event.turn != ROOT or event.prompt_tokens:
            await self.add(
                Notice(
                    f"Branch: {event.prompt_tokens} tokens prefilled, {event.reused_tokens} reused from the cache, "
                    f"in {event.seconds:.1f} s."
                )
            )

    def sibling(self, turn: int, delta: int) -> Optional[int]:
        """Where ←/→ on turn `turn`'s message lands: the newest leaf below the sibling `delta` away."""
        if turn not in self.turn_tree.turns:
            return None
        siblings = self.turn_tree.siblings(turn)
        index = siblings.index(turn) + delta
        if not 0 <= index < len(siblings):
            return None
        return self.turn_tree.leaf(siblings[index])

    def mark_branches(self) -> None:
        """`‹ k/n ›` on every shown message whose turn has siblings."""
        for message in self.query(UserMessage):
            if message.turn in self.turn_tree.turns:
                siblings = self.turn_tree.siblings(message.turn)
                message.show_branch(siblings.index(message.turn) + 1, len(siblings))

    async def show_path(self, turn: int) -> None:
        """The path from the root to `turn`, in place of what was shown (notices go; the tree keeps every turn)."""
        self.turn_tree.current = turn
        self.reply = None
        self._pending = ""
        await self.remove_children()
        for n in self.turn_tree.path(turn):
            t = self.turn_tree.turns[n]
            await self.add(UserMessage(t.user, turn=n))
            reply = AssistantMessage(t.reply_text, t.reply_ids, turn=n)
            reply.steps = self.steps.get(n, [])
            await self.add(reply)
            if self.stop_reasons.get(n) == "cancelled":
                reply.add_class("cancelled")
            if self.reply_view is not None:
                await show_twin(reply, self.reply_view)
        self.mark_branches()

    @handles(HistoryRestored)
    async def restored(self, event: HistoryRestored) -> None:
        await self.add(
            Notice(
                f"Restored {event.messages} messages: {event.tokens} tokens prefilled "
                f"in {event.seconds:.1f} s to rebuild the cache."
            )
        )

    @handles(ConversationReset)
    async def reset(self, event: ConversationReset) -> None:
        notice = "New conversation: the KV cache is empty." + (
            f" System prompt: {event.system}" if event.system else ""
        )
        await self.start_over(notice)

    async def start_over(self, notice: str, model_info: Optional[dict] = None) -> None:
        """An empty transcript with one notice and the welcome (for `model_info`, or the model in use)."""
        if model_info is not None:
            self.model_info = model_info
        self.reply = self.fold = None
        self._pending = self._pending_thought = ""
        self.turn_tree, self.steps, self.stop_reasons, self.started_event = TurnTree(), {}, {}, None
        await self.remove_children()
        await self.add(Notice(notice))
        await self.add(Welcome(self.model_info))
