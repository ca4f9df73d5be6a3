"""A reply tinted by confidence: each token coloured by the probability it had when it was sampled.

Tokens that prompt lookup guessed and the model confirmed are underlined (see
model.runtime.speculate): the stretches the reply copied from the conversation.

Move the cursor with ←/→ (or hover with the mouse) to see that step's top-k
again: the candidates the token was drawn from, as the Next token panel
showed them at the time. ↑/↓ picks one of them and Enter (or a click on it)
forks the reply there: cut before that token, the pick forced, generation
going on from it (the conversation's `fork`).
"""

from dataclasses import dataclass

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.widgets import Static

from model.runtime.events import TopToken

from ..formatting import visible_token
from ..messages import ForkPicked

# Probability bands, low to high, and their background tints.
BANDS = (
    (0.2, "#7a2430", "under 20%"),
    (0.5, "#7a5a1c", "20–50%"),
    (0.9, "#3d5f24", "50–90%"),
    (1.01, "#1f4f36", "90% and up"),
)


def tint(prob: float) -> str:
    for upper, colour, _ in BANDS:
        if prob < upper:
            return colour
    return BANDS[-1][1]


@dataclass(frozen=True)
class SampledStep:
    """One generated token as the reply recorded it."""

    token_id: int
    text: str  # the text this step completed (may be empty mid-character)
    prob: float
    top_k: tuple[TopToken, ...]
    drafted: bool = False  # guessed by prompt lookup, confirmed by the model


class ConfidenceText(Static, can_focus=True):
    DEFAULT_CSS = """
    ConfidenceText { border-left: thick $success 50%; padding: 0 1; margin: 1 0 0 0; height: auto; }
    ConfidenceText:focus { background: $success 10%; }
    """
    BINDINGS = [
        Binding("left", "move(-1)", "Previous token", show=False),
        Binding("right", "move(1)", "Next token", show=False),
        Binding("home", "move(-100000)", show=False),
        Binding("end", "move(100000)", show=False),
        Binding("up", "pick(-1)", "Previous alternative", show=False),
        Binding("down", "pick(1)", "Next alternative", show=False),
        Binding("enter", "fork", "Fork here", show=False),
    ]

    def __init__(self, steps: list[SampledStep]):
        super().__init__()
        self.steps = steps  # shared with the reply: it grows while the reply streams
        self.cursor = -1  # no step picked yet
        self.choice = 0  # the candidate of the cursor's top-k that Enter forks to
        self.turn_id = None  # the turn of this reply (None: it cannot be forked)
        self.tinted = Text()
        self._rows = 0

    def on_mount(self) -> None:
        self.redraw()

    def on_focus(self) -> None:
        if self.cursor < 0 and self.steps:
            self._go_to(0)

    def _go_to(self, step: int) -> None:
        """The cursor on `step`, its pick on the first candidate that is not the token written (the runner-up)."""
        self.cursor = step
        top = self.steps[step].top_k
        self.choice = next((j for j, t in enumerate(top) if t.id != self.steps[step].token_id), 0)
        self.redraw()

    def action_move(self, delta: int) -> None:
        if self.steps:
            self._go_to(min(max(self.cursor + delta, 0), len(self.steps) - 1))

    def action_pick(self, delta: int) -> None:
        if 0 <= self.cursor < len(self.steps) and self.steps[self.cursor].top_k:
            self.choice = min(max(self.choice + delta, 0), len(self.steps[self.cursor].top_k) - 1)
            self.redraw()

    def action_fork(self) -> None:
        if not 0 <= self.cursor < len(self.steps) or not self.steps[self.cursor].top_k:
            return
        if self.turn_id is None:
            self.notify("This reply cannot be forked: it is still being written, or it comes from a saved chat.")
            return
        token = self.steps[self.cursor].top_k[self.choice].id
        self.post_message(ForkPicked(self.turn_id, self.cursor, token))

    def on_mouse_move(self, event: events.MouseMove) -> None:
        step = event.style.meta.get("step") if event.style else None
        if step is not None and step != self.cursor:
            self._go_to(step)

    def on_click(self, event: events.Click) -> None:
        candidate = event.style.meta.get("candidate") if event.style else None
        if candidate is not None:
            self.choice = candidate
            self.action_fork()

    def redraw(self, force_layout: bool = False) -> None:
        body = Text()
        for i, s in enumerate(self.steps):
            if not s.text:
                continue
            style = Style(bgcolor=tint(s.prob), underline=s.drafted, meta={"step": i})
            if i == self.cursor:
                style += Style(reverse=True)
            body.append(s.text, style)
        legend = Text("tint: probability when sampled  ", style="italic dim")
        for _, colour, label in BANDS:
            legend.append(f" {label} ", Style(bgcolor=colour))
            legend.append(" ")
        self.tinted = body  # kept: what the tint of each token is, for tests and copying
        lines = [body, legend, *self._lookup_legend(), *self._detail()]
        # A layout pass reflows the whole screen; only ask for one when the
        # row count (text wrapped at the width, roughly) changes.
        width = max(self.content_size.width, 1)
        rows = sum(max(1, -(-cell_len(line) // width)) for t in lines for line in t.plain.split("\n"))
        self.update(Text("\n").join(lines), layout=force_layout or rows != self._rows or not self.content_size.width)
        self._rows = rows

    def _lookup_legend(self) -> list[Text]:
        if not any(s.drafted for s in self.steps):
            return []
        return [
            Text.assemble(
                ("underlined", Style(underline=True)), (": guessed by prompt lookup, confirmed", "italic dim")
            )
        ]

    def _detail(self) -> list[Text]:
        if not 0 <= self.cursor < len(self.steps):
            return [Text("←/→ or the mouse: a token's top-k at the moment it was written", style="dim")]
        s = self.steps[self.cursor]
        head = Text.assemble(
            ("token ", "dim"),
            (f"#{self.cursor + 1} ", "bold"),
            (visible_token(s.text) if s.text else f"(id {s.token_id})", "bold yellow"),
            ("  sampled at ", "dim"),
            (f"{s.prob * 100:.1f}%", "bold"),
            ("  a prompt-lookup guess the model confirmed" if s.drafted else "", "dim"),
        )
        if not s.top_k:
            return [head, Text("  (no top-k recorded: the Next token panel and this view were both off)", style="dim")]
        candidates = Text("  ")
        for j, t in enumerate(s.top_k):
            style = Style(bold=True, color="yellow") if t.id == s.token_id else Style()
            if j == self.choice:
                style += Style(reverse=True)
            candidates.append(f"{visible_token(t.text)} {t.prob * 100:.1f}%", style + Style(meta={"candidate": j}))
            candidates.append("  ")
        hint = Text("  ↑/↓ pick an alternative, Enter (or a click) forks the reply there", style="dim")
        return [head, candidates, hint]
