"""The KV cache: tokens held against capacity, the pinned sink, evictions, and memory."""

from rich.text import Text

from model.cache.state import CacheState
from model.distributed.info import ClusterInfo, cluster_from_dict
from model.runtime.events import (
    CacheHeld,
    ClusterStep,
    ConversationReset,
    Event,
    ModelReady,
    PrefillProgress,
    TokenGenerated,
    TurnEnded,
)

from ..engine_view import draws, handles
from ..formatting import human_bytes
from .panel import Panel

BAR_WIDTH = 34


class CachePanel(Panel):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.state: CacheState | None = None
        self.flash = ""  # "evicted N tokens", shown for a moment after an eviction
        self.cluster: ClusterInfo | None = None  # with the model split over ranks: each rank's share of the cache

    @draws(ClusterStep)
    def group_step(self, event: ClusterStep) -> None:
        self.cluster = event.cluster
        self.refresh_body()

    @handles(ModelReady)
    def loaded(self, event: ModelReady) -> None:
        data = event.info.get("cluster")
        self.cluster = cluster_from_dict(data) if data else None
        self.show(event.cache)

    @handles(PrefillProgress, CacheHeld, TurnEnded, ConversationReset)
    @draws(TokenGenerated)
    def cache_changed(self, event: Event) -> None:
        self.show(event.cache)

    def show(self, state: CacheState) -> None:
        previous = self.state
        self.state = state
        if previous is not None and state.evicted_total > previous.evicted_total:
            # The engine's own count of the latest eviction, not the difference since the
            # last redraw: which steps get drawn depends on timing, the state does not.
            self.flash = f"⟲ evicted {state.last_evicted} oldest tokens"
            self.set_timer(3.0, self._clear_flash)
        self.refresh_body()

    def _clear_flash(self) -> None:
        self.flash = ""
        self.refresh_body()

    def body(self) -> list:
        s = self.state
        if s is None:
            return [Text("waiting for the model…", style="dim")]
        # At least one cell for anything present, so a small sink still shows.
        sink = max(1, round(BAR_WIDTH * s.sink_tokens / s.capacity)) if s.sink_tokens else 0
        held = max(sink + 1, round(BAR_WIDTH * s.tokens / s.capacity)) if s.tokens > s.sink_tokens else sink
        cells = Text.assemble(
            ("█" * sink, "magenta"), ("█" * max(held - sink, 0), "green"), ("░" * (BAR_WIDTH - max(held, sink)), "dim")
        )
        lines = [
            cells,
            Text.assemble(
                ("held ", "dim"),
                (f"{s.tokens}", "bold"),
                (f" / {s.capacity} tokens", "dim"),
                ("  pos ", "dim"),
                (str(s.position), "bold"),
            ),
            Text.assemble(
                ("sink ", "magenta"),
                (str(s.sink_tokens), "bold"),
                ("  evicted ", "dim"),
                (str(s.evicted_total), "bold"),
            ),
            Text.assemble(
                (human_bytes(s.bytes), "bold"),
                (" now / ", "dim"),
                (human_bytes(s.bytes_full), "bold"),
                (" full  ", "dim"),
                (s.dtype, "cyan"),
            ),
        ]
        if s.windowed_layers:  # Gemma's sliding-window layers hold only their window
            lines.append(
                Text.assemble(
                    ("global ", "dim"),
                    (human_bytes(s.bytes_global), "bold"),
                    ("  windowed ", "dim"),
                    (human_bytes(s.bytes_windowed), "bold"),
                    (f" ({s.windowed_layers} layers, {s.window}-token window)", "dim"),
                )
            )
        if s.mlx_active:  # on the gpu path: MLX's allocator, weights and working space included
            lines.append(
                Text.assemble(
                    ("MLX holds ", "dim"),
                    (human_bytes(s.mlx_active), "bold"),
                    ("  peak ", "dim"),
                    (human_bytes(s.mlx_peak), "bold"),
                )
            )
        if self.cluster is not None:
            lines += self._group_lines(self.cluster)
        if self.flash:
            lines.append(Text(self.flash, style="bold yellow"))
        return lines

    @staticmethod
    def _group_lines(c: ClusterInfo) -> list:
        """The figures above are rank 0's share; the group's cache is every rank's, as each last reported it."""
        shares = [("rank ", "dim")]
        for r in c.per_rank:
            shares += [(f"{r.rank} ", "dim"), (human_bytes(r.kv_bytes), "bold"), ("  ", "")]
        return [
            Text.assemble(
                ("group ", "dim"), (human_bytes(c.kv_bytes), "bold"), (f" on {c.ranks} ranks", "dim"),
                (" (above: rank 0)", "dim"),
            ),
            Text.assemble(*shares[:-1]),
        ]  # fmt: skip
