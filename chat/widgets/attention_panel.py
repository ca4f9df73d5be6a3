"""Attention: where the token being generated looks, in one layer, over every cached position.

The engine recomputes the chosen layer's attention with an explicit softmax
only while this panel is open (see model.internals.watch); the weights of each head sum
to 1 over the cache. The strip buckets the positions (oldest left) and shows
each bucket's share (each row scaled to its own peak); the list names the
most attended tokens with their head-averaged weights.
"""

from collections.abc import Sequence

from rich.text import Text
from textual.binding import Binding

from model.runtime.events import InsideStep, ModelReady

from ..engine_view import draws, handles
from ..formatting import fit, visible_token
from ..messages import NeedsChanged
from .panel import Panel

COLUMNS = 35  # fits the sidebar beside a 5-column label
LEVELS = " ▁▂▃▄▅▆▇█"
NAMED = 5  # most attended tokens listed


def buckets(weights: Sequence[float], columns: int = COLUMNS) -> list[float]:
    """Sum of the weights in each of `columns` equal runs of positions (fewer if there are fewer positions)."""
    n = len(weights)
    columns = min(columns, n)
    return [sum(weights[i * n // columns : (i + 1) * n // columns]) for i in range(columns)]


def strip(shares: list[float], top: float) -> str:
    """One character per bucket, its height the bucket's share relative to `top`."""
    last = len(LEVELS) - 1
    return "".join(LEVELS[min(last, round(last * s / top))] if top > 0 and s > 0 else " " for s in shares)


class AttentionPanel(Panel, can_focus=True):
    BINDINGS = [
        Binding("left,minus", "layer(-1)", "Layer down"),
        Binding("right,plus,equals_sign", "layer(1)", "Layer up"),
        Binding("h", "heads", "Heads / mean"),
    ]

    def __init__(self, layers: int = 30, **kwargs):
        super().__init__(**kwargs)
        self.layer_count = layers
        self.attention_layer = layers // 2
        self.per_head = False
        self.step: InsideStep | None = None

    def on_mount(self) -> None:
        super().on_mount()
        self.border_subtitle = "focus (Tab/click): ←/→ layer · h heads"

    @handles(ModelReady)
    def ready(self, event: ModelReady) -> None:
        self.layer_count = event.info["layers"]
        self.attention_layer = self.layer_count // 2  # a middle layer: early ones look mostly nearby
        self.refresh_body()
        self.post_message(NeedsChanged())  # the model's layer count decides what the engine reads

    @draws(InsideStep)
    def show(self, step: InsideStep) -> None:
        if step.attention:
            self.step = step
            self.refresh_body()

    def action_layer(self, delta: int) -> None:
        self.attention_layer = (self.attention_layer + delta) % self.layer_count
        self.post_message(NeedsChanged())  # the engine must watch that layer
        self.refresh_body()

    def action_heads(self) -> None:
        self.per_head = not self.per_head
        self.refresh_body()

    def body(self) -> list:
        heading = Text.assemble(
            ("layer ", "dim"), (f"{self.attention_layer}", "bold"), (f"/{self.layer_count - 1}", "dim")
        )
        step = self.step
        if step is None:
            return [heading, Text("shown for the next token written…", style="dim")]
        heads = step.attention
        mean = step.attention_mean
        positions = len(mean)
        heading.append(f" · token #{step.index + 1} · {positions} positions", "dim")
        lines = [heading]
        if step.layer != self.attention_layer:
            lines.append(Text(f"(layer {step.layer} shown until the next step)", "yellow"))
        rows = [("mean", mean)] + ([(f"h{i}", row) for i, row in enumerate(heads)] if self.per_head else [])
        # Each row is scaled to its own largest bucket: the sink often takes a
        # big share, and one shared scale would flatten everything else.
        for label, weights in rows:
            shares = buckets(weights)
            lines.append(
                Text.assemble(
                    (f"{label:<5}", "dim"), (strip(shares, max(shares)), "bold cyan" if label == "mean" else "cyan")
                )
            )
        lines.append(self._ruler(positions, step.sink))
        for a in step.most_attended[:NAMED]:
            where = "sink" if a.position < step.sink else f"@{a.position}"
            lines.append(
                Text.assemble(
                    (f"{a.weight * 100:5.1f}% ", "bold"),
                    (fit(visible_token(a.text), 14), ""),
                    (f" {where}", "magenta" if a.position < step.sink else "dim"),
                )
            )
        return lines

    @staticmethod
    def _ruler(positions: int, sink: int) -> Text:
        """Under the strip: which buckets hold the pinned sink, and where the newest token is."""
        columns = min(COLUMNS, positions)
        marks = Text(" " * 5)
        for i in range(columns):
            first = i * positions // columns
            marks.append("▔", "magenta" if first < sink else "grey42")
        marks.append(" new", "dim")
        return marks
