"""The message box: Enter sends, Shift+Enter or Ctrl+J starts a new line, ↑/↓ walk earlier messages.

It also holds a message being edited (`e` on a message): its title says which, until it is sent or Esc cancels.
Files are attached from here (the composer around it keeps them): `/file PATH` and Enter, with Tab
completing the path, or a pasted path of a file; Backspace in the empty box takes the last file off.
"""

import os
from collections.abc import Callable, Sequence
from urllib.parse import unquote, urlparse

from textual import events
from textual.message import Message
from textual.widgets import TextArea

from ..attachments import Attachment, split_message
from ..input_history import InputHistory
from ..messages import PromptSubmitted
from ..path_completion import complete_path

FILE_COMMAND = "/file"


def pasted_file(text: str) -> str | None:
    """The path a paste names, if it is one line naming a file (quoted, or a file:// URL, as file managers paste)."""
    candidate = text.strip()
    if not candidate or "\n" in candidate:
        return None
    if len(candidate) > 1 and candidate[0] == candidate[-1] and candidate[0] in "'\"":
        candidate = candidate[1:-1]
    if candidate.startswith("file://"):
        candidate = unquote(urlparse(candidate).path)
    return candidate if os.path.isfile(os.path.expanduser(candidate)) else None


class PromptInput(TextArea):
    DEFAULT_CSS = """
    PromptInput {
        height: auto;
        max-height: 8;
        min-height: 3;
        border: round $accent;
    }
    PromptInput.editing { border: round $warning; }
    """
    TITLE = "Message"

    class AttachRequested(Message):
        """`/file PATH` and Enter, or a pasted path: attach that file to the message."""

        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

    class AttachmentsHeld(Message):
        """A message put back in the box (`e`) carries these files: they are attached again."""

        def __init__(self, attachments: list[Attachment]) -> None:
            super().__init__()
            self.attachments = attachments

    class Cleared(Message):
        """The box was emptied after a send (or an edit given up): its files go with it."""

    class DropLast(Message):
        """Backspace in the empty box: take the last file off."""

    def __init__(self, history: Callable[[], Sequence[str]] = tuple, **kwargs):
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)
        self.border_title = self.TITLE
        self.earlier = InputHistory(history)  # not `history`: TextArea keeps its undo stack there

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            self.earlier.reset()
            if self.file_command() is not None:
                self.post_message(self.AttachRequested(self.file_command()))
            else:
                self.post_message(PromptSubmitted(self.text))
            return
        if event.key == "tab" and self.file_command() is not None:
            event.prevent_default()
            event.stop()
            self._complete(self.file_command())
            return
        if event.key == "backspace" and not self.text:
            self.post_message(self.DropLast())
        if event.key in ("up", "down") and self._walk(event.key):
            event.prevent_default()
            event.stop()
            return
        if event.key in ("shift+enter", "ctrl+j"):
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        await super()._on_key(event)

    async def _on_paste(self, event: events.Paste) -> None:
        path = pasted_file(event.text)
        if path is not None:  # TextArea's own paste (next in line) is skipped
            event.prevent_default()
            event.stop()
            self.post_message(self.AttachRequested(path))

    def file_command(self) -> str | None:
        """The path of a `/file PATH` line (empty while only `/file` is typed); None for a message."""
        line = self.text.strip()
        if "\n" in line or not (line == FILE_COMMAND or line.startswith(FILE_COMMAND + " ")):
            return None
        return line[len(FILE_COMMAND) :].strip()

    def _complete(self, typed: str) -> None:
        completion = complete_path(typed)
        self.text = f"{FILE_COMMAND} {completion.text}"
        self.move_cursor(self.document.end)
        if len(completion.matches) > 1:
            shown = ", ".join(completion.matches[:8]) + (", …" if len(completion.matches) > 8 else "")
            self.notify(f"{len(completion.matches)} names fit: {shown}", timeout=4)
        elif not completion.matches:
            self.notify(f"No file starts with {typed or 'that'}.", timeout=3)

    def clear(self):
        result = super().clear()
        self.post_message(self.Cleared())
        return result

    def _walk(self, key: str) -> bool:
        """↑ on the first row and ↓ on the last walk the history; elsewhere they move the cursor."""
        at = self.cursor_location
        if self.selection.start != self.selection.end:
            return False
        if key == "up" and self.navigator.is_first_wrapped_line(at):
            entry = self.earlier.older(self.text)
        elif key == "down" and self.navigator.is_last_wrapped_line(at):
            entry = self.earlier.newer()
        else:
            return False
        if entry is None:
            return False
        self.text = split_message(entry)[0]  # what was typed: an earlier message's files are not attached again
        self.move_cursor(self.document.end)
        return True

    def start_editing(self, text: str, title: str) -> None:
        """Hold a message to edit: its text in the box (its files attached again), `title` on the border."""
        text, attachments = split_message(text)
        self.post_message(self.AttachmentsHeld(attachments))
        self.text = text
        self.move_cursor(self.document.end)
        self.border_title = title
        self.add_class("editing")
        self.focus()

    def stop_editing(self) -> None:
        self.border_title = self.TITLE
        self.remove_class("editing")
