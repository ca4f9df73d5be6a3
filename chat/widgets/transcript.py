"""The conversation: user messages, replies streamed in as Markdown, and notices.

Replies grow with `Markdown.append`, which parses only the new lines and
updates the last block instead of re-parsing the whole message per token
(what `MarkdownStream` does too; the app already batches fragments, and
appending directly keeps each batch in the app's own screen update). The
transcript is anchored to the bottom and lets go when the user scrolls up to
read; scrolling back to the end re-attaches it.

A single newline in a reply is a line break, as chat UIs render it (oterm,
llama.cpp's web UI): plain Markdown would join a poem's lines into one
paragraph. Code blocks and tables keep their own layout, and the reply's text
(what Copy gives) is never changed: only the parser differs.
"""

from markdown_it import MarkdownIt
from textual.containers import VerticalScroll
from textual.widgets import Markdown, Static

from .confidence import ConfidenceText, SampledStep
from .token_chips import TokenChips


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
        self.twin: ConfidenceText | None = None  # the tinted view, while confidence colouring is on

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


async def show_confidence(reply: AssistantMessage, on: bool, live: bool = False) -> None:
    """Swap a reply for its confidence-tinted twin, or back (replies without recorded steps stay)."""
    if on and reply.twin is None and (reply.steps or live):
        reply.twin = ConfidenceText(reply.steps)
        await reply.parent.mount(reply.twin, after=reply)
        reply.display = False
    elif not on and reply.twin is not None:
        await reply.twin.remove()
        reply.twin = None
        reply.display = True
        if reply.text:
            await reply.update(reply.text)  # it was not appended to while the twin was shown


async def toggle_chips(message, tokens) -> None:
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


class Transcript(VerticalScroll):
    DEFAULT_CSS = """
    Transcript { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
    """

    def on_mount(self) -> None:
        self.anchor()

    async def add(self, widget) -> None:
        await self.mount(widget)

    def last_reply(self) -> AssistantMessage | None:
        replies = self.query(AssistantMessage)
        return replies.last() if replies else None
