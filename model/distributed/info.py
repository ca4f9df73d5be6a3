"""What a group of ranks is, as plain data: for the Cluster view, `--json` and the bench.

Rank 0 fills it from the group (no MLX call to read it, so any thread may), and
every consumer draws from the same fields: which rank runs where and holds how
much, how the model is split, and what one decode step costs in communication.
"""

from dataclasses import asdict, dataclass
from typing import Optional

TENSOR, PIPELINE = "tensor", "pipeline"


@dataclass(frozen=True)
class RankInfo:
    rank: int
    host: str  # where it runs: "127.0.0.1" for a local group, else the hostfile's ssh name
    weight_bytes: int  # this rank's share of the weights, as of the last step
    kv_bytes: int  # this rank's KV cache, as of the last step
    layers: tuple[int, int]  # the blocks it runs, [first, stop): every block in tensor parallel
    heads: int  # the query heads it holds in those blocks


@dataclass(frozen=True)
class ClusterInfo:
    ranks: int
    backend: str  # MLX's distributed backend: "ring" (TCP)
    mode: str  # TENSOR: every rank a share of every block; PIPELINE: every rank a run of whole blocks
    per_rank: tuple[RankInfo, ...]
    comm_s_per_step: Optional[float]  # one decode step's communication alone, measured at start (None: not yet)
    messages_per_step: int  # collectives (tensor: all_sums) or hops (pipeline: sends) per decode step
    bytes_per_message: int  # one token's residual stream in the compute dtype

    @property
    def kv_bytes(self) -> int:
        """The group's KV cache, all ranks together."""
        return sum(r.kv_bytes for r in self.per_rank)

    @property
    def weight_bytes(self) -> int:
        return sum(r.weight_bytes for r in self.per_rank)

    def as_dict(self) -> dict:
        out = asdict(self)
        # The name `--json` has always used for tensor parallel's figure.
        out["all_sum_s_per_step"] = self.comm_s_per_step if self.mode == TENSOR else None
        return out


@dataclass(frozen=True)
class StepTiming:
    """One timed decode step on rank 0 (see model.distributed.step_timer): its collectives against the rest."""

    comm_s: float  # in the step's collectives: the transfer, and waiting for any rank still computing
    compute_s: float  # the rest of the forward pass: rank 0's share of the blocks, and the head
    collectives: int  # how many were timed (the pass's header and ids, then 2 all_sums per block)
    step: int  # timed steps so far; this is the latest


def cluster_from_dict(data: dict) -> ClusterInfo:
    """A ClusterInfo back from `as_dict` (ModelReady's info carries it as plain data)."""
    fields = {k: v for k, v in data.items() if k in ClusterInfo.__dataclass_fields__}
    ranks = tuple(RankInfo(**{**r, "layers": tuple(r["layers"])}) for r in data["per_rank"])
    return ClusterInfo(**{**fields, "per_rank": ranks})
