"""One line under the transcript: what the engine is doing, and a compact summary on narrow screens."""

from rich.text import Text
from textual.widgets import Static

from model.runtime.stats import CacheState

from ..formatting import human_bytes, rate


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine { height: 1; padding: 0 1; color: $text-muted; background: $panel; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.state_text = "loading the model…"
        self.queued = 0
        self.summary = ""

    def set_state(self, text: str) -> None:
        self.state_text = text
        self._redraw()

    def set_queued(self, n: int) -> None:
        self.queued = n
        self._redraw()

    def set_summary(self, prefill_tok_s: float, decode_tok_s: float, cache: CacheState | None) -> None:
        parts = [f"prefill {rate(prefill_tok_s)}", f"decode {rate(decode_tok_s)}"]
        if cache is not None:
            parts.append(f"cache {cache.tokens}/{cache.capacity} ({human_bytes(cache.bytes)})")
        self.summary = " · ".join(parts)
        self._redraw()

    def _redraw(self) -> None:
        text = Text(self.state_text)
        if self.queued:
            text.append(f"  · {self.queued} queued", style="yellow")
        if self.summary and self.has_class("with-summary"):
            text.append("  │ " + self.summary, style="dim")
        self.update(text, layout=False)  # height: 1, always
