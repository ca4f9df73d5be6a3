"""A reply in the transcript: Markdown that grows as the reply streams, and its tinted twin.

Replies grow with `Markdown.append`, which parses only the new lines and
updates the last block instead of re-parsing the whole message per token
(what `MarkdownStream` does too; the text is batched until the paced redraw,
and appending there keeps each batch in the same screen update as the panels).

A single newline in a reply is a line break, as chat UIs render it (oterm,
llama.cpp's web UI): plain Markdown would join a poem's lines into one
paragraph. Code blocks and tables keep their own layout, and the reply's text
(what Copy gives) is never changed: only the parser differs.
"""

from typing import Optional

from markdown_it import MarkdownIt
from textual.widgets import Markdown

from .confidence import SampledStep
from .token_chips import toggle_chips


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

    def __init__(self, text: str = "", token_ids: tuple = (), turn_id: Optional[int] = None):
        super().__init__(text, parser_factory=chat_markdown_parser)
        self.text = text
        self.turn_id = turn_id  # the turn this reply belongs to
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
        reply.twin.turn_id = reply.turn_id
        await reply.parent.mount(reply.twin, after=reply)
        reply.display = False
    elif view is None and reply.twin is not None:
        await reply.twin.remove()
        reply.twin = None
        reply.display = True
        if reply.text:
            await reply.update(reply.text)  # it was not appended to while the twin was shown
