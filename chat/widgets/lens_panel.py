"""Logit lens: each layer's best guess for the next token, read through the final norm and the head.

The engine reads every block's output at the new position through the same
final norm and output head the model uses after its last block (only while
this panel is open). Early layers guess vaguely; the guess sharpens up the
stack, and the last row is the model's own prediction.
"""

from rich.text import Text

from model.runtime.events import InsideStep, ModelReady

from ..engine_view import draws, handles
from ..formatting import bar, fit, visible_token
from ..messages import NeedsChanged
from .panel import Panel

ROWS = 10  # layers shown, spread evenly from the first to the last
BAR_WIDTH = 8


def shown_layers(count: int, rows: int = ROWS) -> list[int]:
    """`rows` layer indices from 0 to count-1, evenly spread, both ends included."""
    if count <= rows:
        return list(range(count))
    return sorted({round(i * (count - 1) / (rows - 1)) for i in range(rows)})


class LensPanel(Panel):
    def __init__(self, layers: int = 30, **kwargs):
        super().__init__(**kwargs)
        self.layer_count = layers
        self.step: InsideStep | None = None

    def layers_wanted(self) -> tuple[int, ...]:
        """The layers this panel shows: what the engine needs to read."""
        return tuple(shown_layers(self.layer_count))

    @handles(ModelReady)
    def ready(self, event: ModelReady) -> None:
        self.layer_count = event.info["layers"]
        self.post_message(NeedsChanged())  # the model's layer count decides what the engine reads

    @draws(InsideStep)
    def show(self, step: InsideStep) -> None:
        if step.lens:
            self.step = step
            self.refresh_body()

    def body(self) -> list:
        if self.step is None:
            return [Text("shown for the next token written…", style="dim")]
        rows = dict(zip(self.step.lens_layers or range(len(self.step.lens)), self.step.lens))
        final = self.step.lens[-1][0]
        lines = [
            Text.assemble(
                ("token #", "dim"), (f"{self.step.index + 1}", "bold"), ("  layer: top guess, runner-up", "dim")
            )
        ]
        for layer in sorted((rows.keys() & set(self.layers_wanted())) or rows, reverse=True):
            best, second = rows[layer][0], rows[layer][1] if len(rows[layer]) > 1 else None
            agrees = best.id == final.id
            lines.append(
                Text.assemble(
                    (f"L{layer:<3}", "dim"),
                    (fit(visible_token(best.text), 11), "bold green" if agrees else ""),
                    " ",
                    (bar(best.prob, BAR_WIDTH), "green" if agrees else "blue"),
                    f" {best.prob * 100:3.0f}% ",
                    (fit(visible_token(second.text), 10) if second else "", "dim"),
                )
            )
        return lines
