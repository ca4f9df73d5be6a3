"""Prefill: how many prompt tokens this turn read, how many the cache already had, and how fast."""

from rich.text import Text

from model.runtime.events import PrefillDone, PrefillProgress, TurnStarted

from ..engine_view import handles
from ..formatting import bar, rate, seconds
from .panel import Panel


class PrefillPanel(Panel):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.prompt_tokens = 0
        self.reused_tokens = 0
        self.done = 0
        self.prefill_s = 0.0
        self.prefill_tok_s = 0.0
        self.running = False

    @handles(TurnStarted)
    def started(self, event: TurnStarted) -> None:
        self.prompt_tokens, self.reused_tokens = event.prompt_tokens, event.reused_tokens
        self.done, self.prefill_s, self.prefill_tok_s, self.running = 0, 0.0, 0.0, True
        self.refresh_body()

    @handles(PrefillProgress)
    def progress(self, event: PrefillProgress) -> None:
        self.done = event.done
        if self.display:
            self.refresh_body()

    @handles(PrefillDone)
    def prefilled(self, event: PrefillDone) -> None:
        s = event.stats
        self.prompt_tokens, self.reused_tokens = s.prompt_tokens, s.reused_tokens
        self.prefill_s, self.prefill_tok_s, self.running = s.prefill_s, s.prefill_tok_s, False
        self.done = s.prompt_tokens
        self.refresh_body()

    def body(self) -> list:
        lines = [
            Text.assemble(
                ("prefilled ", "dim"),
                (f"{self.prompt_tokens}", "bold"),
                (" tokens  ", "dim"),
                ("reused ", "dim"),
                (f"{self.reused_tokens}", "bold"),
            ),
        ]
        if self.running:
            frac = self.done / self.prompt_tokens if self.prompt_tokens else 0.0
            lines.append(Text.assemble((bar(frac, 20), "cyan"), f" {self.done}/{self.prompt_tokens}"))
        else:
            lines.append(
                Text.assemble(
                    ("time ", "dim"),
                    (seconds(self.prefill_s) if self.prefill_s else "–", "bold"),
                    ("  ", ""),
                    (rate(self.prefill_tok_s), "bold"),
                )
            )
        return lines
