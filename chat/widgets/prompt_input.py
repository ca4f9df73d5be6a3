"""The message box: Enter sends, Shift+Enter or Ctrl+J starts a new line, ↑/↓ walk earlier messages.

It also holds a message being edited (`e` on a message): its title says which, until it is sent or Esc cancels.
"""

from collections.abc import Callable, Sequence

from textual import events
from textual.widgets import TextArea

from ..input_history import InputHistory
from ..messages import PromptSubmitted


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

    def __init__(self, history: Callable[[], Sequence[str]] = tuple, **kwargs):
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)
        self.border_title = self.TITLE
        self.earlier = InputHistory(history)  # not `history`: TextArea keeps its undo stack there

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            self.earlier.reset()
            self.post_message(PromptSubmitted(self.text))
            return
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
        self.text = entry
        self.move_cursor(self.document.end)
        return True

    def start_editing(self, text: str, title: str) -> None:
        """Hold a message to edit: its text in the box, `title` on the border."""
        self.text = text
        self.move_cursor(self.document.end)
        self.border_title = title
        self.add_class("editing")
        self.focus()

    def stop_editing(self) -> None:
        self.border_title = self.TITLE
        self.remove_class("editing")
