"""A user's message in the transcript: its branch arrows, and the keys that act on it.

A message whose turn has siblings (a regenerate, an edit or a fork made them)
shows `‹ 2/3 ›` under it; ←/→ or a click on an arrow shows the sibling's path.
`e` puts the message in the prompt box to edit it: sending makes a new branch
beside it, and the old one stays reachable with the arrows. Files attached to it
show as chips above what was typed (`text` is still the whole message the model read).
"""

from typing import Optional

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.widgets import Static

from ..attachments import split_message
from ..messages import BranchPicked, EditPicked
from .attachment_chip import chip_text, count_tokens
from .token_chips import toggle_chips


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
        ("e", "edit", "Edit"),
        Binding("left", "branch(-1)", "Previous branch", show=False),
        Binding("right", "branch(1)", "Next branch", show=False),
    ]

    def __init__(self, text: str, queued: bool = False, turn_id: Optional[int] = None):
        # Plain text: what a user types is never read as markup.
        super().__init__(markup=False, classes="queued" if queued else "")
        self.text = text
        self.typed, self.attachments = split_message(text)
        self.turn_id = turn_id  # the turn this message opened, once it was sent
        self.branch: Optional[tuple[int, int]] = None  # (which, of how many) among its siblings, when it has some
        self.border_subtitle = "queued" if queued else None
        self.update(self._body())

    def on_mount(self) -> None:
        if self.attachments:
            self.update(self._body())  # the chips' token counts, now that the app's tokenizer can be asked

    def _body(self) -> Text:
        """The files as chips, what was typed, and the branch arrows when it has siblings."""
        tok = self.app.tokenizer() if self.is_attached else None
        lines = [chip_text(a, count_tokens(tok, [a])) for a in self.attachments]
        if self.typed or not lines:
            lines.append(Text(self.typed))
        if self.branch is not None:
            which, count = self.branch
            lines.append(
                Text.assemble(
                    ("‹", Style(bold=True, meta={"branch": -1})),
                    (f" {which}/{count} ", "dim"),
                    ("›", Style(bold=True, meta={"branch": 1})),
                )
            )
        return Text("\n").join(lines)

    def show_branch(self, which: int, count: int) -> None:
        """`‹ 2/3 ›` under the message when it has siblings."""
        self.branch = (which, count) if count > 1 else None
        self.update(self._body())

    def action_branch(self, delta: int) -> None:
        if self.branch is not None and self.turn_id is not None:
            self.post_message(BranchPicked(self.turn_id, delta))

    def action_edit(self) -> None:
        self.post_message(EditPicked(self))

    def on_click(self, event: events.Click) -> None:
        delta = event.style.meta.get("branch") if event.style else None
        if delta is not None:
            self.action_branch(delta)

    def mark_sent(self, turn_id: int) -> None:
        self.turn_id = turn_id
        self.remove_class("queued")
        self.border_subtitle = None

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.notify("Message copied to the clipboard.")

    async def action_tokens(self) -> None:
        await toggle_chips(self, self.app.tokens_of_text(self.text))
