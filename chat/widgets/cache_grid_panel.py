"""The KV cache as a grid: rows are layers, columns the conversation's tokens (bucketed)."""

from rich.text import Text

from model.internals.cache_grid import grid_cells
from model.runtime.stats import CacheState

from .panel import Panel

COLUMNS = 40
ROWS = 6  # layers shown; every layer holds the same positions
STYLE = {
    "sink": ("█", "magenta"),
    "held": ("█", "green"),
    "new": ("█", "bold cyan"),
    "evicted_last": ("×", "bold yellow"),
    "evicted": ("·", "grey42"),
    "free": ("░", "grey30"),
}


class CacheGridPanel(Panel):
    TITLE = "KV cache grid"
    CAPTION = "Layers × tokens; a prefill fills a block, decode one column."

    def __init__(self, layers: int = 30, **kwargs):
        super().__init__(**kwargs)
        self.layer_count = layers
        self.cells: list[str] = []

    def show(self, state: CacheState, new_tokens: int) -> None:
        history = state.tokens + state.evicted_total
        self.cells = grid_cells(
            history,
            state.sink_tokens,
            state.evicted_total,
            state.last_evicted,
            new_tokens,
            free=state.capacity - state.tokens,
            buckets=COLUMNS,
        )
        self.refresh_body()

    def body(self) -> list:
        if not self.cells:
            return [Text("waiting for the model…", style="dim")]
        row = Text()
        for cell in self.cells:
            char, style = STYLE[cell]
            row.append(char, style)
        step = max(1, self.layer_count // ROWS)
        lines = [Text.assemble((f"L{i:<3}", "dim"), row) for i in range(0, self.layer_count, step)][:ROWS]
        legend = Text.assemble(
            ("█", "magenta"),
            " sink ",
            ("█", "green"),
            " held ",
            ("█", "bold cyan"),
            " new ",
            ("×", "bold yellow"),
            " just evicted ",
            ("·", "grey42"),
            " evicted",
        )
        return lines + [legend]
