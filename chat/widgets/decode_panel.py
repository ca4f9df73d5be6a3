"""Decode: tokens per second, live and over the reply, with a chart; a thinking model's tokens split in two; prompt lookup's guesses on the border."""

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from model.runtime.events import TokenGenerated, TurnEnded, TurnStarted
from model.runtime.stats import DraftCounts

from ..engine_view import EngineView, draws, handles
from ..formatting import rate, seconds


class DecodePanel(EngineView, Vertical):
    DEFAULT_CSS = """
    DecodePanel {
        border: round $primary 60%;
        border-title-style: bold;
        padding: 0 1;
        height: 6;  /* fixed (numbers, chart, caption): never measured during a layout pass */
    }
    DecodePanel.thinking { height: 7; }  /* one more row: thinking and answer tokens */
    DecodePanel Sparkline { height: 2; margin: 0; }
    DecodePanel #decode-split { display: none; }
    DecodePanel.thinking #decode-split { display: block; }
    DecodePanel .caption { color: $text-muted; text-style: italic; }
    """

    caption = ""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rates: list[float] = []
        self.generated = 0
        self.elapsed = 0.0
        self.live = 0.0
        self.final = 0.0
        self.drafts = DraftCounts()
        # Kept, not queried: a late redraw while the app closes must not fail.
        self.numbers = Static(id="decode-numbers")
        self.split = Static(id="decode-split")  # a thinking model's tokens: thinking, then answer
        self.thinking = 0
        self.chart = Sparkline([], summary_function=max, id="decode-chart")

    def compose(self) -> ComposeResult:
        yield self.numbers
        yield self.split
        yield self.chart
        yield Static(self.caption, classes="caption")

    def on_mount(self) -> None:
        self._render_numbers()

    @handles(TurnStarted)
    def started(self, _event: TurnStarted) -> None:
        self.rates, self.generated, self.elapsed, self.live, self.final = [], 0, 0.0, 0.0, 0.0
        self.thinking = 0
        self.drafts = DraftCounts()
        self._redraw()

    @handles(TokenGenerated)
    def record(self, step: TokenGenerated) -> None:
        """Every step's live rate goes into the chart, drawn or not (cheap: an append)."""
        if step.live_tok_s:
            self.rates.append(step.live_tok_s)
        self.thinking += step.thinking

    @draws(TokenGenerated)
    def show_step(self, event: TokenGenerated) -> None:
        self.generated = event.index + 1
        self.elapsed = event.elapsed_s
        self.live = event.live_tok_s
        self.drafts = event.drafts
        self._redraw()

    @handles(TurnEnded)
    def ended(self, event: TurnEnded) -> None:
        self.final = event.stats.decode_tok_s
        self.generated = event.stats.generated_tokens
        self.thinking = event.stats.thinking_tokens
        self.drafts = DraftCounts(event.stats.drafted_tokens, event.stats.accepted_tokens)
        self._redraw()

    def _redraw(self) -> None:
        self._render_numbers()
        self.border_subtitle = lookup_line(self.drafts)
        # Under two rates there is no line to draw: Sparkline would fill one value
        # to full height, as if the model were already at its top speed.
        self.chart.data = self.rates[-120:] if len(self.rates) > 1 else []

    def _render_split(self) -> None:
        # A layout pass only when a turn starts or stops thinking: the row comes and goes with it.
        self.set_class(self.thinking > 0, "thinking")
        if self.thinking:
            self.split.update(
                Text.assemble(
                    ("thinking ", "dim"),
                    (str(self.thinking), "bold magenta"),
                    ("  answer ", "dim"),
                    (str(self.generated - self.thinking), "bold"),
                ),
                layout=False,
            )

    def _render_numbers(self) -> None:
        self._render_split()
        headline = self.final or self.live
        label = "reply " if self.final else "live "
        # One row, always: no layout pass needed.
        self.numbers.update(
            Text.assemble(
                (label, "dim"),
                (rate(headline), "bold green"),
                ("  tokens ", "dim"),
                (str(self.generated), "bold"),
                ("  ", ""),
                (seconds(self.elapsed) if self.elapsed else "–", "bold"),
            ),
            layout=False,
        )


def lookup_line(drafts: DraftCounts) -> str:
    """Prompt lookup's guesses in this reply; none made, nothing shown."""
    if not drafts.drafted:
        return ""
    return f"lookup: {drafts.drafted} drafted, {drafts.accepted} accepted ({drafts.acceptance:.0%})"
