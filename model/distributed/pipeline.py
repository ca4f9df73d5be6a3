"""Pipeline parallel: each rank runs a contiguous run of whole blocks, and the residual stream goes rank to rank.

Rank 0 embeds the tokens and runs the first stage, then sends the stream to
rank 1, which runs its blocks and sends on, and so on; the last rank sends the
result back to rank 0, which applies the final norm and head. One pass is N
hops of one (B, L, d) array, against 2 x layers all_sums in tensor parallel,
but the stages run one after another: it makes room for a model, not speed.

The hops are `mx.distributed.send` and `recv`, which the ring backend carries
between neighbours, and the ring's neighbours are exactly r -> r+1 and the
last -> 0. Each rank's KV cache holds only its own blocks (`keep_layers`
renumbers them), and since every rank sets its cache to rank 0's length and
sink before each pass (see `mirror`), eviction, K-shift and rollback happen on
every rank at the same token. Only rank 0 needs the embedding and the head:
the others keep one row of each, enough for the dtype the cache is made in.
"""

import time

import mlx.core as mx
import mlx.nn as nn

from model.cache.kv_factory import compute_dtype
from model.distributed.plan import stages


def hand_on(h: mx.array, group) -> mx.array:
    """Send this stage's output to the next rank; on rank 0 (the last hop's end) return what comes back."""
    rank, size = group.rank(), group.size()
    sent = mx.distributed.send(h, (rank + 1) % size, group=group)
    if rank != 0:
        return sent
    # The receive must wait for the send: both are in rank 0's graph, and nothing else orders them.
    return mx.depends(mx.distributed.recv_like(h, size - 1, group=group), sent)


def time_hops(group, rounds: int, width: int, dtype) -> float:
    """Seconds for `rounds` trips of one token's residual stream around the ring (one decode step's hops each)."""
    start = time.perf_counter()
    for _ in range(rounds):
        x = mx.zeros((1, 1, width), dtype)
        if group.rank() != 0:
            x = mx.distributed.recv_like(x, group.rank() - 1, group=group)
        mx.eval(hand_on(x, group))
    return time.perf_counter() - start


def _keep_one_row(module: nn.Module) -> None:
    for name in ("weight", "scales", "biases"):
        if name in module:
            module[name] = mx.contiguous(module[name][:1])


class Stage:
    """One rank's run of blocks, passing the stream on; everything else (config, cache hooks) is the model's."""

    def __init__(self, model, layers: range, group):
        self.inner = model
        self.group = group
        self.layers = layers  # in the full model's numbering
        self.dtype = compute_dtype(model)  # what the stream arrives in
        self.timer = None  # rank 0's StepTimer (see step_timer): a timed step times the hops alone
        model.keep_layers(layers)
        if group.rank() != 0:
            _keep_one_row(model.model.embed_tokens)
            if "lm_head" in model:
                _keep_one_row(model.lm_head)
        mx.eval(model.parameters())

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def hidden_states(self, tokens, cache=None, probe=None):
        rank = self.group.rank()
        if rank == 0:
            h = self.inner.embed(tokens)
        else:  # the tokens only give the shape: the stream comes from the rank before
            # On a follower the ids arrive by an all_sum (see `mirror`) that nothing here reads, so it
            # would be left out of the graph while rank 0 waits in it: run it now, before the receive.
            mx.eval(tokens)
            shape = (*tokens.shape, self.inner.config.hidden_size)
            h = mx.distributed.recv(shape, self.dtype, rank - 1, group=self.group)
        h = self.inner.blocks(h, cache, probe)
        if self.timer is not None and self.timer.active:  # rank 0's timed step: the trip round the ring alone
            return self.timer.collective(h, lambda: hand_on(h, self.group))
        return hand_on(h, self.group)

    def __call__(self, tokens, cache=None, last_only: bool = False, probe=None):
        h = self.hidden_states(tokens, cache, probe)
        if last_only:
            h = h[:, -1:, :]
        return self.inner.head(h)


def stage_loaded(model, group, memory=None) -> Stage:
    """This rank's stage of `model` (in place), the split proportional to each rank's `memory` (even if None)."""
    return Stage(model, stages(model.config.num_hidden_layers, group.size(), memory)[group.rank()], group)
