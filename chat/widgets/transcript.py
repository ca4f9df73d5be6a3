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
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Markdown, Static

from model.runtime.events import (
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
from .confidence import SampledStep
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
    BINDINGS = [("c", "copy", "Copy"), ("t", "tokens", "Tokens")]

    def __init__(self, text: str, queued: bool = False):
        # Plain text: what a user types is never read as markup.
        super().__init__(text, markup=False, classes="queued" if queued else "")
        self.text = text
        self.border_subtitle = "queued" if queued else None

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

    def __init__(self, text: str = "", token_ids: tuple = ()):
        super().__init__(text, parser_factory=chat_markdown_parser)
        self.text = text
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
        self.model_info: dict = {}  # for the welcome

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
        if event.note:
            await self.add(Notice(event.note, "warning"))
        self.reply = AssistantMessage()
        await self.add(self.reply)
        if self.reply_view is not None:  # the twin shares the reply's step list, so it fills as the reply streams
            await show_twin(self.reply, self.reply_view, live=True)

    @handles(TokenGenerated)
    def token(self, event: TokenGenerated) -> None:
        if self.reply is not None:  # an append: the reply views draw from it when shown
            self.reply.steps.append(SampledStep(event.token_id, event.text, event.prob, event.top_k))
            self._pending += event.text  # drawn with the panels: each Markdown append costs a parse and a layout

    @draws(TokenGenerated)
    async def flush(self, _event: Optional[TokenGenerated] = None) -> None:
        text, self._pending = self._pending, ""
        if text and self.reply is not None and self.reply.is_attached:
            await self.reply.add(text)

    @draws(TokenGenerated, heavy=True)
    def redraw_twin(self, _event: TokenGenerated) -> None:
        if self.reply is not None and self.reply.twin is not None:
            self.reply.twin.redraw()

    @handles(TurnEnded)
    async def ended(self, event: TurnEnded) -> None:
        await self.flush()
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
        self.reply = None
        self._pending = ""
        await self.remove_children()
        await self.add(Notice(notice))
        await self.add(Welcome(self.model_info))
