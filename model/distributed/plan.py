"""Which part of the model each rank holds: heads and MLP columns (tensor parallel), or a run of blocks (pipeline).

Heads are dealt out by key/value group, so a rank's query heads always read
the key/value heads it holds and attention needs no communication. The default
model has 3 KV heads: over 2 ranks one gets 2 (and their 6 query heads), the
other 1 (and 3). The MLP columns are then split the other way round, so every
rank does about the same work per layer.
"""

from dataclasses import dataclass, replace
from typing import Optional

from model.errors import ModelError
from model.network.config import ModelConfig

ALIGN = 64  # MLP split points are multiples of this: every quantization group size we load divides it


@dataclass(frozen=True)
class Share:
    rank: int
    kv_heads: range  # this rank's key/value heads
    q_heads: range  # the query heads that read them
    mlp: range  # SwiGLU columns (gate/up outputs, down inputs)

    def config(self, full: ModelConfig) -> ModelConfig:
        """The config as this rank's layers see it: its head counts and MLP width (the KV cache is sized from it)."""
        return replace(
            full,
            num_attention_heads=len(self.q_heads),
            num_key_value_heads=len(self.kv_heads),
            intermediate_size=len(self.mlp),
        )


def _deal(n: int, size: int) -> list[range]:
    """n items in `size` contiguous runs, the first ranks taking one more when it does not divide."""
    counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
    starts = [sum(counts[:r]) for r in range(size)]
    return [range(s, s + c) for s, c in zip(starts, counts)]


def split(config: ModelConfig, size: int) -> list[Share]:
    """Every rank's share; ranks beyond the number of KV heads would hold no attention, so they are refused."""
    n_kv, n_q, d, hd, f = (
        config.num_key_value_heads,
        config.num_attention_heads,
        config.hidden_size,
        config.head_dim,
        config.intermediate_size,
    )
    if not 1 <= size <= n_kv:
        raise ModelError(f"This model has {n_kv} key/value heads, so it splits over 1 to {n_kv} ranks, not {size}.")
    group = n_q // n_kv  # query heads per KV head
    kv = _deal(n_kv, size)
    # Per-layer weights of each rank's attention (q and o: d x hd per query head; k and v: per KV head),
    # then MLP columns (3 x d each) to bring every rank to the same total.
    attention = [2 * d * hd * (group * len(r) + len(r)) for r in kv]
    target = (sum(attention) + 3 * d * f) / size
    widths = []
    for r in range(size - 1):
        want = max(0.0, (target - attention[r]) / (3 * d))
        widths.append(min(int(round(want / ALIGN)) * ALIGN, f - sum(widths)))
    widths.append(f - sum(widths))
    starts = [sum(widths[:r]) for r in range(size)]
    return [
        Share(r, kv[r], range(kv[r].start * group, kv[r].stop * group), range(starts[r], starts[r] + widths[r]))
        for r in range(size)
    ]


def stages(n_layers: int, size: int, memory: Optional[list[float]] = None) -> list[range]:
    """Pipeline parallel: each rank's contiguous run of blocks, in proportion to `memory` (its host's, any unit).

    Even when `memory` is None. Every rank gets at least one block; rank 0 also holds the embedding and head."""
    if not 1 <= size <= n_layers:
        raise ModelError(
            f"This model has {n_layers} layers, so a pipeline splits it over 1 to {n_layers} ranks, not {size}."
        )
    memory = memory or [1.0] * size
    if len(memory) != size or min(memory) <= 0:
        raise ModelError(f"A pipeline over {size} ranks needs {size} positive memory sizes, not {memory}.")
    bounds = [0]
    for r in range(1, size):
        b = round(n_layers * sum(memory[:r]) / sum(memory))
        bounds.append(min(max(b, bounds[-1] + 1), n_layers - (size - r)))  # one block at least, for every rank
    bounds.append(n_layers)
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]
