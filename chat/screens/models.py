"""The Models screen: pick the model to chat with, from those on disk or by a Hub id or a path.

It lists the default model, the models opened before and those in the Hub cache, each
with its architecture, size on disk and quantization, read from headers on a worker
thread (see `chat/model_catalog.py`). It only chooses: the chat screen asks the engine
to load the choice, and the download, if any, shows its progress there.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label

from model.loading import hub
from model.loading.describe import ModelCard

from ..formatting import human_bytes
from ..model_catalog import catalog, looks_like_hub_id

COLUMNS = ("", "model", "architecture", "size", "quantization", "where")
NAME_WIDTH = 48  # a GGUF in a Hub repo is named repo/file: its middle goes first
Choice = tuple[Optional[str]]  # (source,): a tuple, because None (the default model) is a choice too


def middle_cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, its middle replaced by an ellipsis (both ends say the most)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def home_short(path: Path) -> str:
    """A path under the home folder as ~/..., as a shell shows it."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def source_problem(text: str) -> Optional[str]:
    """One line if the field's text can be neither a local model nor a Hub id."""
    if Path(text).expanduser().exists() or looks_like_hub_id(text):
        return None
    return f"No model at '{text}': give a .gguf file, a model folder, or a Hub id like org/name."


class ModelsScreen(ModalScreen[Optional[Choice]]):
    """Dismisses with (source,) to load, or None."""

    DEFAULT_CSS = """
    ModelsScreen { align: center middle; }
    ModelsScreen > Vertical { width: 120; max-width: 98%; height: auto; max-height: 90%; border: round $accent; background: $surface; padding: 0 1; }
    ModelsScreen DataTable { height: auto; min-height: 3; max-height: 24; margin: 1 0; }
    ModelsScreen .hint { color: $text-muted; }
    ModelsScreen #models-error { color: $error; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, current: Optional[str], recent: Sequence[str], cache_dir: Optional[Path] = None):
        super().__init__()
        self.current = current  # the model in use (None: the default)
        self.recent = list(recent)
        self.cache_dir = cache_dir or hub.hub_cache_dir()
        self.cards: list[ModelCard] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Models[/b]")
            yield Label(
                "Enter loads it in a new conversation (this one stays saved) · Tab: a Hub id or a path · Esc closes",
                classes="hint",
            )
            table = DataTable(id="models", cursor_type="row", zebra_stripes=True)
            table.add_columns(*COLUMNS)
            yield table
            yield Input(placeholder="a Hub id (org/name), or the path of a .gguf file or a model folder", id="source")
            yield Label("", id="models-error")
            offline = " · offline (HF_HUB_OFFLINE): only the cache is read" if hub.offline() else ""
            yield Label(f"Hub cache: {home_short(self.cache_dir)}{offline}", id="cache-dir", classes="hint")

    def on_mount(self) -> None:
        self.query_one(DataTable).loading = True
        self.list_models()

    @work(thread=True, exclusive=True)
    def list_models(self) -> None:
        """Headers and configs are read off the UI thread; a large cache takes a moment."""
        cards = catalog(self.recent, self.cache_dir)
        self.app.call_from_thread(self.show, cards)

    def show(self, cards: list[ModelCard]) -> None:
        self.cards = cards
        table = self.query_one(DataTable)
        table.loading = False
        table.clear()
        for i, card in enumerate(cards):
            table.add_row(*self.row(card), key=str(i))
        table.focus()

    def row(self, card: ModelCard) -> list:
        style = "dim" if card.problem else ""
        where = f"{card.where} · {card.problem}" if card.problem else card.where
        size = human_bytes(card.size_bytes) if card.size_bytes else "–"
        marker = Text("●", style="bold green") if card.source == self.current else Text("")
        cells = (middle_cut(card.name, NAME_WIDTH), card.architecture, size, card.quantization, where)
        return [marker, *(Text(str(c), style=style) for c in cells)]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss((self.cards[int(event.row_key.value)].source,))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        problem = source_problem(text)
        if problem:
            self.query_one("#models-error", Label).update(problem)
            return
        path = Path(text).expanduser()
        self.dismiss((str(path.resolve()) if path.exists() else text,))
