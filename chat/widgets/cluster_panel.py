"""The group of ranks a split model runs on: who holds what, and what a decode step pays to talk.

Each rank's weight and KV-cache bytes come from the ranks themselves (each writes its
own into the header rank 0 sends before every forward pass). The step's communication
is measured inside a timed decode step (see model.distributed.step_timer): rank 0's
time in its collectives, which includes waiting for a slower rank, against the rest
of its forward pass. The all_sums timed alone at start are shown under it, for scale.
"""

from typing import Optional

from rich.text import Text

from model.distributed.info import PIPELINE, ClusterInfo, StepTiming, cluster_from_dict
from model.runtime.events import ClusterStep, ModelReady, TurnStarted

from ..engine_view import draws, handles
from ..formatting import human_bytes, seconds
from .panel import Panel

BAR_WIDTH = 30
SINGLE = "One process: nothing is split. Start with --ranks 2 to split the model over 2 processes on this machine."


def row(rank: str, host: str, holds: str, weights: str, kv: str) -> str:
    """One line of the ranks' table (42 cells: the side column's width)."""
    return f"{rank:<5}{host[:11]:<11}{holds:>6}{weights:>10}{kv:>10}"


def timing_row(label: str, comm: str, compute: str, note: str = "") -> str:
    return f"{label:<11}{comm:>8}{compute:>10}  {note}".rstrip()


class ClusterPanel(Panel):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.cluster: Optional[ClusterInfo] = None
        self.loaded = False
        self.timing: Optional[StepTiming] = None  # the latest timed step
        self.reply: dict[int, StepTiming] = {}  # this reply's timed steps, by number

    @handles(ModelReady)
    def model_ready(self, event: ModelReady) -> None:
        data = event.info.get("cluster")
        self.cluster = cluster_from_dict(data) if data else None
        self.loaded, self.timing, self.reply = True, None, {}
        self.refresh_body()

    @handles(TurnStarted)
    def reply_started(self, _event: TurnStarted) -> None:
        self.reply = {}

    @handles(ClusterStep)
    def keep_timing(self, event: ClusterStep) -> None:
        # Every step, drawn or not: the reply's mean must not depend on which steps got drawn.
        if event.timing is not None:
            self.reply[event.timing.step] = event.timing

    @draws(ClusterStep)
    def step(self, event: ClusterStep) -> None:
        self.cluster, self.timing = event.cluster, event.timing
        self.refresh_body()

    def body(self) -> list:
        if not self.loaded:
            return [Text("waiting for the model…", style="dim")]
        c = self.cluster
        if c is None:
            return [Text(SINGLE, style="dim")]
        pipeline = c.mode == PIPELINE
        lines = [
            Text.assemble(
                (f"{c.ranks} ranks", "bold"),
                (" · ", "dim"),
                (f"{c.mode} parallel", "bold"),
                (" · ", "dim"),
                (c.backend, "cyan"),
                (" backend", "dim"),
            ),
            Text(row("rank", "host", "blocks" if pipeline else "heads", "weights", "KV"), style="dim"),
        ]
        for r in c.per_rank:
            # Tensor parallel: every rank a share of every block's heads; pipeline: whole blocks, a run each.
            holds = f"{r.layers[0]}-{r.layers[1] - 1}" if pipeline else str(r.heads)
            lines.append(Text(row(str(r.rank), r.host, holds, human_bytes(r.weight_bytes), human_bytes(r.kv_bytes))))
        lines.append(Text(row("all", "", "", human_bytes(c.weight_bytes), human_bytes(c.kv_bytes)), style="bold"))
        lines += self._timing_lines(c)
        return lines

    def _timing_lines(self, c: ClusterInfo) -> list:
        t = self.timing
        if t is None:
            return [Text("per decode step: waiting for the first timed step…", style="dim")]
        total = t.comm_s + t.compute_s
        share = t.comm_s / total if total else 0.0
        cells = round(BAR_WIDTH * share)
        lines = [
            Text.assemble(
                ("█" * cells, "yellow"), ("█" * (BAR_WIDTH - cells), "green"), (f" {share:.0%} comm", "yellow")
            ),
            Text(timing_row("per step", "comm", "compute"), style="dim"),
            Text(timing_row("last", seconds(t.comm_s), seconds(t.compute_s), f"{t.collectives} msgs")),
        ]
        if len(self.reply) > 1:
            steps = self.reply.values()
            comm, compute = (sum(getattr(s, f) for s in steps) / len(steps) for f in ("comm_s", "compute_s"))
            lines.append(Text(timing_row("reply mean", seconds(comm), seconds(compute), f"{len(steps)} steps")))
        if c.comm_s_per_step is not None:
            alone = timing_row("msgs alone", seconds(c.comm_s_per_step), "", f"{c.messages_per_step} msgs")
            lines.append(Text(alone, style="dim"))
        return lines
