"""The frame every side panel shares: a titled border and a one-line caption that teaches."""

from rich.console import Group
from rich.text import Text
from textual.widgets import Static


class Panel(Static):
    DEFAULT_CSS = """
    Panel {
        border: round $primary 60%;
        border-title-color: $text;
        border-title-style: bold;
        padding: 0 1;
        height: auto;
    }
    """

    TITLE = ""
    CAPTION = ""  # what this number means, in one line

    def on_mount(self) -> None:
        self.border_title = self.TITLE
        self.refresh_body()

    def refresh_body(self) -> None:
        lines = self.body()
        self.update(Group(*lines, Text(self.CAPTION, style="italic dim")))

    def body(self) -> list:
        return []
