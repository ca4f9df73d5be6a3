"""What a probe saw, gathered from every rank, so `inspect` and the views see the whole model when it is split.

A rank records only what it holds: in tensor parallel its query heads of every
block, in a pipeline every head of its own blocks. After a probed pass each
rank writes its records into zero-filled arrays of the whole model's shape, at
its own heads and blocks, and one `all_sum` per array puts them together on
rank 0: attention weights (layers, heads, keys), each layer's number of keys
(a windowed layer sees fewer), and each block's output. In tensor parallel every
rank's block outputs are the same (each block ends in an all_sum), so rank 0's
alone are counted.
"""

from dataclasses import dataclass

import mlx.core as mx

from model.network.probe import Probe


@dataclass(frozen=True)
class Place:
    """Where a rank's share sits in the whole model."""

    layers: range  # the blocks it runs, in the whole model's numbering
    heads: range  # the query heads it holds in them
    full_layers: int
    full_heads: int
    tensor: bool  # every rank runs every block (tensor parallel)


@dataclass(frozen=True)
class Gathered:
    """A layer's attention as gathered: the same `weights()` an AttentionSeen gives, for every head."""

    w: mx.array  # (heads, keys)

    def weights(self) -> mx.array:
        return self.w


def local_probe(place: Place) -> Probe:
    """What a rank records in a probed pass: every block it runs, and their outputs."""
    return Probe(attention_layers=range(len(place.layers)), hidden=True)


def gather(local: Probe, place: Place, group, keys: int, shape: tuple[int, int, int]) -> tuple[dict, list]:
    """Every rank calls it after a probed pass: (layer -> Gathered, each block's output (1, T, d)) on rank 0.

    `keys`: the most keys any layer attends over (the cache's length); `shape`: a block output's (1, T, d)."""
    L, H = place.full_layers, place.full_heads
    weights = mx.zeros((L, H, keys), mx.float32)
    sizes = mx.zeros((L,), mx.int32)
    counts_here = not place.tensor or group.rank() == 0  # one rank's figures per layer, not N copies
    for i, seen in local.attention.items():
        w = seen.weights()  # (this rank's heads, keys this layer sees)
        weights[place.layers.start + i, place.heads.start : place.heads.stop, : w.shape[1]] = w
        if counts_here:
            sizes[place.layers.start + i] = w.shape[1]
    hidden = mx.zeros((L, *shape[1:]), mx.float32)
    if counts_here:
        for i, h in enumerate(local.hidden_states):
            hidden[place.layers.start + i] = h[0].astype(mx.float32)
    weights, sizes, hidden = (mx.distributed.all_sum(x, group=group) for x in (weights, sizes, hidden))
    mx.eval(weights, sizes, hidden)
    dtype = local.hidden_states[0].dtype if local.hidden_states else mx.float32
    attention = {g: Gathered(weights[g, :, :n]) for g, n in enumerate(sizes.tolist())}
    return attention, [hidden[g][None].astype(dtype) for g in range(L)]


def fill(probe: Probe, attention: dict, hidden: list) -> None:
    """Hand the gathered records to the caller's probe, as if one process had made them."""
    for layer in probe.attention_layers:
        probe.attention[layer] = attention[layer]
    if probe.hidden:
        probe.hidden_states.extend(hidden)
