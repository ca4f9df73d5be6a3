"""Model facts: architecture, shape, parameters, weights, backend."""

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from ..formatting import human_bytes

ROWS = [
    ("source", "model"),
    ("architecture", "architecture"),
    ("layers", "layers"),
    ("heads", "query heads"),
    ("kv_heads", "key/value heads"),
    ("hidden_size", "width"),
    ("context_length", "trained context"),
    ("vocab_size", "vocabulary"),
    ("parameters", "parameters"),
    ("weight_dtype", "weight dtype"),
    ("weight_layout", "weight layout"),
    ("weight_bytes", "weight memory"),
    ("backend", "backend"),
    ("blas", "BLAS"),
]


def info_table(info: dict) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(style="bold")
    for key, label in ROWS:
        value = info.get(key, "–")
        if key == "weight_bytes":
            value = human_bytes(value)
        elif key == "parameters":
            value = f"{value / 1e6:.1f} M"
        table.add_row(label, str(value))
    return table


class ModelInfoScreen(ModalScreen):
    DEFAULT_CSS = """
    ModelInfoScreen { align: center middle; }
    ModelInfoScreen > Vertical { width: 76; max-width: 95%; height: auto; border: round $accent; background: $surface; padding: 1 2; }
    """
    BINDINGS = [Binding("escape,q,enter", "dismiss", "Close")]

    def __init__(self, info: dict):
        super().__init__()
        self.info = info

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("[b]Model[/b]")
            yield Static(info_table(self.info))
