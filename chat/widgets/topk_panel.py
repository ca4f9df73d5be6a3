"""The next-token distribution at each step: the top candidates, their probabilities, the pick."""

from rich.text import Text

from model.runtime.events import ModelReady, TokenGenerated

from ..engine_view import draws, handles
from ..formatting import bar, fit, visible_token
from .panel import Panel

TOKEN_WIDTH = 12
BAR_WIDTH = 12


class TopKPanel(Panel):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.step: TokenGenerated | None = None
        self.distribution = ""
        self.show_ids = False

    @handles(ModelReady)
    def ready(self, event: ModelReady) -> None:
        self.distribution = event.distribution

    @draws(TokenGenerated)
    def show(self, step: TokenGenerated) -> None:
        self.step = step
        self.refresh_body()

    def toggle_ids(self) -> None:
        self.show_ids = not self.show_ids
        self.refresh_body()

    def body(self) -> list:
        header = Text(self.distribution, style="dim")
        if self.step is None or not self.step.top_k:
            return [header, Text("waiting for the first token…", style="dim")]
        # Plain Text rows with fixed-width fields: a Rich Table costs several
        # times as much to render, and this panel redraws during every reply.
        rows = [self._row(c.id, visible_token(c.text), c.prob, c.id == self.step.token_id) for c in self.step.top_k]
        if all(c.id != self.step.token_id for c in self.step.top_k):
            rows.append(
                self._row(self.step.token_id, f"(id {self.step.token_id})", self.step.prob, True, bar_shown=False)
            )
        return [header, *rows]

    def _row(self, token_id: int, token: str, prob: float, picked: bool, bar_shown: bool = True) -> Text:
        style = "bold yellow" if picked else ""
        row = Text.assemble(("▶ " if picked else "  ", "bold yellow"), (fit(token, TOKEN_WIDTH), style), " ")
        if self.show_ids:
            row.append(f"{token_id:>6} ", "dim")
        row.append(bar(prob, BAR_WIDTH) if bar_shown else " " * BAR_WIDTH, "yellow" if picked else "blue")
        row.append(f" {prob * 100:5.1f}%")
        return row
