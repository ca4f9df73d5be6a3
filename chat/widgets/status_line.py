"""One line under the transcript: what the engine is doing, and a compact summary on narrow screens."""

from rich.text import Text
from textual.widgets import Static

from model.cache.state import CacheState
from model.runtime.events import (
    CacheHeld,
    ConversationReset,
    Event,
    ModelFailed,
    ModelLoading,
    ModelReady,
    PrefillDone,
    PrefillProgress,
    TokenGenerated,
    TurnEnded,
    TurnFailed,
    TurnStarted,
)

from ..engine_view import EngineView, draws, handles
from ..formatting import human_bytes, rate

AFTER_REPLY = {"stop": "ready", "length": "ready (reply hit --max-tokens)", "cancelled": "ready (reply stopped)"}


class StatusLine(EngineView, Static):
    DEFAULT_CSS = """
    StatusLine { height: 1; padding: 0 1; color: $text-muted; background: $panel; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.state_text = "loading the model…"
        self.queued = 0
        self.summary = ""
        self.prefill_tok_s = 0.0  # the last turn's
        self.decode_tok_s = 0.0  # live during a reply, the reply's figure after it

    def set_state(self, text: str) -> None:
        self.state_text = text
        self._redraw()

    def set_queued(self, n: int) -> None:
        self.queued = n
        self._redraw()

    @handles(ModelLoading)
    def loading(self, event: ModelLoading) -> None:
        self.set_state(f"loading: {event.message}")

    @handles(ModelFailed)
    def failed(self, _event: ModelFailed) -> None:
        self.set_state("no model loaded: Ctrl+L picks one")

    @handles(ModelReady, CacheHeld, TurnFailed, ConversationReset)
    def ready(self, _event: Event) -> None:
        self.set_state("ready")

    @handles(TurnStarted)
    def started(self, _event: TurnStarted) -> None:
        self.set_state("reading the prompt…")

    @handles(PrefillProgress)
    def progress(self, event: PrefillProgress) -> None:
        if event.turn_id == 0:  # the cache brought to another path, or a saved conversation's
            self.set_state(f"rebuilding the KV cache: {event.done}/{event.total} tokens")

    @handles(PrefillDone)
    def prefilled(self, event: PrefillDone) -> None:
        self.prefill_tok_s = event.stats.prefill_tok_s
        self.set_state("writing the reply…  (Esc stops)")

    @draws(TokenGenerated)
    def step(self, event: TokenGenerated) -> None:
        self._summarise(event.live_tok_s, event.cache)

    @handles(TurnEnded)
    def ended(self, event: TurnEnded) -> None:
        self._summarise(event.stats.decode_tok_s, event.cache)
        self.set_state(AFTER_REPLY[event.stats.stop_reason])

    def _summarise(self, decode_tok_s: float, cache: CacheState) -> None:
        self.decode_tok_s = decode_tok_s
        self.summary = " · ".join(
            (
                f"prefill {rate(self.prefill_tok_s)}",
                f"decode {rate(decode_tok_s)}",
                f"cache {cache.tokens}/{cache.capacity} ({human_bytes(cache.bytes)})",
            )
        )
        self._redraw()

    def _redraw(self) -> None:
        text = Text(self.state_text)
        if self.queued:
            text.append(f"  · {self.queued} queued", style="yellow")
        if self.summary and self.has_class("with-summary"):
            text.append("  │ " + self.summary, style="dim")
        self.update(text, layout=False)  # height: 1, always
