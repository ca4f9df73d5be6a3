"""The KV cache as a grid: rows are layers, columns the conversation's tokens (bucketed)."""

from rich.text import Text

from model.cache.state import CacheState
from model.internals.cache_grid import grid_cells
from model.runtime.events import ModelReady, PrefillProgress, TokenGenerated, TurnStarted

from ..engine_view import draws, handles
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
    def __init__(self, layers: int = 30, **kwargs):
        super().__init__(**kwargs)
        self.layer_count = layers
        self.cells: list[str] = []
        self.tokens = 0  # tokens held at the last prefill step: what a chunk adds is new

    @handles(ModelReady)
    def ready(self, event: ModelReady) -> None:
        self.layer_count = event.info["layers"]
        self.show(event.cache, new_tokens=0)

    @handles(TurnStarted)
    def started(self, event: TurnStarted) -> None:
        self.tokens = event.reused_tokens

    @handles(PrefillProgress)
    def progress(self, event: PrefillProgress) -> None:
        if self.display:
            self.show(event.cache, new_tokens=event.cache.tokens - self.tokens)
        self.tokens = event.cache.tokens

    @draws(TokenGenerated, heavy=True)
    def show_step(self, event: TokenGenerated) -> None:
        self.show(event.cache, new_tokens=1)

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
