"""The frame every side panel shares: a titled border and a one-line caption that teaches."""

from rich.cells import cell_len
from rich.console import Group
from rich.text import Text
from textual.widgets import Static

from ..engine_view import EngineView


def _rows(item, width: int) -> int:
    """Screen rows a body line takes at `width` (a Text wraps; anything else is assumed one row per line)."""
    if isinstance(item, Text):
        return sum(max(1, -(-cell_len(line) // width)) for line in item.plain.split("\n"))
    return getattr(item, "row_count", 1)


class Panel(EngineView, Static):
    """A side panel: its title and caption come from its row in `chat/views.py`."""

    DEFAULT_CSS = """
    Panel {
        border: round $primary 60%;
        border-title-color: $text;
        border-title-style: bold;
        padding: 0 1;
        height: auto;
    }
    """

    caption = ""  # what this number means, in one line

    def on_mount(self) -> None:
        self.refresh_body()

    _shape: tuple = ()

    def refresh_body(self) -> None:
        lines = self.body()
        caption = Text(self.caption, style="italic dim")
        # A layout pass reflows the whole screen (tens of ms); a redraw whose
        # row count is unchanged only needs its own region repainted. And with
        # its height set, a panel is not rendered again just to be measured
        # when something else (the reply, growing) asks for a layout pass.
        width = self.content_size.width
        shape = (width, *(_rows(line, width) for line in [*lines, caption])) if width else ()
        changed = not shape or shape != self._shape
        if shape and changed:
            self.styles.height = sum(shape[1:]) + self.styles.gutter.height
        elif not shape:
            self.styles.height = "auto"
        self.update(Group(*lines, caption), layout=changed)
        self._shape = shape

    def body(self) -> list:
        return []
