"""The next-token distribution at each step: the top candidates, their probabilities, the pick."""

from rich.table import Table
from rich.text import Text

from model.events import TokenGenerated

from ..formatting import bar, visible_token
from .panel import Panel

TOKEN_WIDTH = 12
BAR_WIDTH = 12


class TopKPanel(Panel):
    TITLE = "Next token"
    CAPTION = "Every token gets a score; ▶ is the pick."

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.step: TokenGenerated | None = None
        self.distribution = ""
        self.show_ids = False

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
        table = Table.grid(padding=(0, 1))
        table.add_column(width=1)
        table.add_column(width=TOKEN_WIDTH, no_wrap=True, overflow="ellipsis")
        if self.show_ids:
            table.add_column(justify="right", style="dim")
        table.add_column(width=BAR_WIDTH)
        table.add_column(justify="right")
        for cand in self.step.top_k:
            picked = cand.id == self.step.token_id
            row = [Text("▶" if picked else " ", style="bold yellow"),
                   Text(visible_token(cand.text), style="bold yellow" if picked else "")]
            if self.show_ids:
                row.append(str(cand.id))
            row += [Text(bar(cand.prob, BAR_WIDTH), style="yellow" if picked else "blue"),
                    f"{cand.prob * 100:5.1f}%"]
            table.add_row(*row)
        if all(c.id != self.step.token_id for c in self.step.top_k):
            table.add_row(Text("▶", style="bold yellow"), Text(f"(id {self.step.token_id})", style="yellow"),
                          *([""] if self.show_ids else []), "", f"{self.step.prob * 100:5.1f}%")
        return [header, table]
