"""An attached file as a chip: its name, size and token count, above the message box and in the transcript.

Above the box a chip has a ✕ that takes the file off the message (Backspace in
an empty box takes the last one off). In the transcript the same line stands
for the file's text, which the message carries (`chat/attachments.py`); `t` on
the message shows every token the model read, the file's included.
"""

from typing import Optional

from rich.text import Text
from textual import events
from textual.message import Message
from textual.widgets import Static

from ..attachments import Attachment, compose_message
from ..formatting import human_bytes

ICON = "▤"


def count_tokens(tokenizer, attachments: list[Attachment], typed: str = "") -> Optional[int]:
    """Tokens of the message these files and this text make, as the model reads it (None: no tokenizer yet)."""
    if tokenizer is None:
        return None
    return len(tokenizer.encode_text(tokenizer.readable(compose_message(typed, attachments))))


def chip_text(attachment: Attachment, tokens: Optional[int]) -> Text:
    """`▤ notes.txt · 3.2 KB · 812 tokens` (no count before the model's tokenizer is known)."""
    chip = Text.assemble((f" {ICON} ", "bold"), (attachment.name, "bold"), (f" · {human_bytes(attachment.size)}", ""))
    if tokens is not None:
        chip.append(f" · {tokens:,} tokens")
    chip.append(" ")
    return chip


class AttachmentChip(Static):
    DEFAULT_CSS = """
    AttachmentChip { width: auto; height: 1; background: $accent 30%; margin: 0 1 0 0; }
    AttachmentChip:hover { background: $accent 50%; }
    """

    class Removed(Message):
        """The ✕ on a chip was clicked: take its file off the message."""

        def __init__(self, chip: "AttachmentChip") -> None:
            super().__init__()
            self.chip = chip

    def __init__(self, attachment: Attachment, tokens: Optional[int]):
        super().__init__(chip_text(attachment, tokens).append("✕ ", "bold"))
        self.attachment, self.tokens = attachment, tokens
        self.tooltip = "Click to take this file off the message"

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(self.Removed(self))
