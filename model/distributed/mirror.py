"""Rank 0 leads, the others follow: every forward pass rank 0 runs, each follower runs on its share too.

Before each forward pass rank 0 sends a small header (which cache, its
capacity, KV bits, sink size and length, and how many tokens) and then the
token ids; each follower sets its own cache to the same length and sink and
runs the same pass. That is all a follower needs: eviction, K-shift, rollback
(a shorter length) and reset (length 0) all follow from the length and sink,
so the caches stay in step without being told about each operation. Only rank 0
samples: the followers never see logits.

Both messages are `all_sum`s, the followers adding zeros, so the token ids may
still be lazy on rank 0 (decode queues step n+1 before reading token n); the
header is read at once, since a follower must know what to run. Each rank also
writes its weight and KV bytes into its own slots of the header, which is how
rank 0 learns every rank's figures at no extra cost.
"""

import time
from typing import Optional

import mlx.core as mx

from model.cache.kv_cache import KVCache
from model.cache.kv_factory import compute_dtype, make_cache
from model.cache.settings import CacheSettings
from model.distributed.gather import Place, fill, gather, local_probe
from model.distributed.pipeline import Stage, time_hops
from model.distributed.shard import AllSum
from model.distributed.step_timer import StepTimer
from model.loading.weights import weight_bytes

FORWARD, TIME_ALL_SUMS, TIME_HOPS = 1, 2, 3
_FIELDS = 8  # op, cache number, capacity, kv bits, keep, length, tokens, probed (see gather)
_KEPT_CACHES = 2  # the conversation's cache and the warm-up's; older ones are dropped on both sides


def _header(group, fields: list[int], own: tuple[int, int]) -> list[int]:
    """All ranks' header: rank 0's fields, and each rank's (weight bytes, KV bytes) in its slots."""
    size, rank = group.size(), group.rank()
    x = [0] * (_FIELDS + 2 * size)
    x[: len(fields)] = fields
    x[_FIELDS + 2 * rank : _FIELDS + 2 * rank + 2] = own
    return mx.distributed.all_sum(mx.array(x, dtype=mx.int64), group=group).tolist()


def _kv_bytes(cache: Optional[KVCache]) -> int:
    return 0 if cache is None else sum(layer.nbytes() for layer in cache.layers)


def time_all_sums(group, count: int, width: int, dtype) -> float:
    """Seconds for `count` all_sums of one token's residual stream (what one decode step sends)."""
    x = mx.zeros((1, 1, width), dtype)
    mx.eval(mx.distributed.all_sum(x, group=group))
    start = time.perf_counter()
    for _ in range(count):
        x = mx.distributed.all_sum(x, group=group)
        mx.eval(x)
    return time.perf_counter() - start


TIMERS = {TIME_ALL_SUMS: time_all_sums, TIME_HOPS: time_hops}  # op -> what every rank runs, same arguments
HOP_ROUNDS = 10  # pipeline: trips around the ring timed at once (one is too short to time alone)


class Leader:
    """Rank 0's model: the share it holds, announcing each forward pass to the followers first.

    Everything else (config, rope, head, the inner modules) is the share's own."""

    def __init__(self, share_model, group, place: Place, pipeline: bool = False):
        self.inner = share_model
        self.group = group
        self.place = place  # where rank 0's share sits in the whole model
        self.pipeline = pipeline
        self.caches: dict[int, tuple[int, KVCache]] = {}  # id(cache) -> (number, cache)
        self.next_number = 0
        self.weight_bytes = weight_bytes(share_model)
        self.figures: list[tuple[int, int]] = []  # per rank: (weight bytes, KV bytes), as of the last step
        self.pending = None  # the last pass's output, until the next one is announced
        self.timer = StepTimer()
        if isinstance(share_model, Stage):
            share_model.timer = self.timer
        for module in share_model.modules():
            if isinstance(module, AllSum):
                module._timer = self.timer

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _number(self, cache) -> int:
        if cache is None:
            return -1
        if id(cache) not in self.caches:
            self.caches[id(cache)] = (self.next_number, cache)  # holding it keeps its id from being reused
            self.next_number += 1
            while len(self.caches) > _KEPT_CACHES:
                self.caches.pop(next(iter(self.caches)))
        return self.caches[id(cache)][0]

    def _announce(self, tokens: mx.array, cache, probed: bool = False) -> mx.array:
        # Collectives run in the order graphs are evaluated, not the order they were built: a
        # previous pass still lazy (warm-up feeds the argmax of logits it never evaluated) would
        # send its all_sums after this header, while the followers wait for them before it.
        if self.pending is not None:
            mx.async_eval(self.pending)
            self.pending = None
        bits = getattr(cache, "bits", 0)
        fields = [FORWARD, self._number(cache)]
        if cache is not None:
            fields += [cache.capacity, bits, cache.keep, cache.length]
        else:
            fields += [0, 0, 0, 0]
        fields += [tokens.shape[1], int(probed)]
        header = _header(self.group, fields, (self.weight_bytes, _kv_bytes(cache)))
        self.figures = [tuple(header[_FIELDS + 2 * r : _FIELDS + 2 * r + 2]) for r in range(self.group.size())]
        # The followers add zeros: the sum is rank 0's ids, and using it keeps the send in rank 0's graph.
        return mx.distributed.all_sum(tokens.astype(mx.int32), group=self.group)

    def hidden_states(self, tokens, cache=None, probe=None):
        if probe is not None:
            return self._probed(tokens, cache, probe)
        h = self.inner.hidden_states(self._announce(tokens, cache), cache, probe)
        # Evaluated now, even when the caller only wants the cache filled: the last
        # block's all_sums must run on every rank, or the ranks' sends fall out of step.
        mx.eval(h)
        return h

    def _probed(self, tokens, cache, probe):
        """A pass the caller looks inside: every rank records its share, and rank 0 gathers the whole (see gather)."""
        local = local_probe(self.place)
        h = self.inner.hidden_states(self._announce(tokens, cache, probed=True), cache, local)
        mx.eval(h)
        keys = cache.length if cache is not None else tokens.shape[1]
        fill(probe, *gather(local, self.place, self.group, keys, h.shape))
        return h

    def __call__(self, tokens, cache=None, last_only: bool = False, probe=None):
        if probe is not None:
            h = self._probed(tokens, cache, probe)
            return self.inner.head(h[:, -1:, :] if last_only else h)
        if last_only:
            self.timer.arm()  # a prefill's last token: the decode pass after it is timed, so every reply has one
        elif self.timer.due():  # a decode step (or a prompt-lookup verify pass, a step of several tokens)
            return self._timed(tokens, cache, last_only, probe)
        # The head needs the whole residual stream, so every all_sum is in this graph.
        self.pending = self.inner(self._announce(tokens, cache), cache, last_only, probe)
        return self.pending

    def _timed(self, tokens, cache, last_only: bool, probe):
        """A decode step run collective by collective, so its communication can be told from its compute."""
        mx.eval(tokens)  # choosing these ids was the previous step's work
        if self.pending is not None:
            mx.eval(self.pending)
            self.pending = None
        with self.timer.step():
            ids = self.timer.collective(None, lambda: self._announce(tokens, cache), count=2)  # header, then ids
            out = self.inner(ids, cache, last_only, probe)
            mx.eval(out)
        return out

    def time_step_comm(self, repeats: int = 5) -> float:
        """Seconds of communication in one decode step, timed alone (median of repeats): tensor parallel's
        2 x layers all_sums, or one trip of the stream around the pipeline's ranks."""
        if self.pipeline:
            op, count, steps = TIME_HOPS, HOP_ROUNDS, HOP_ROUNDS
        else:
            op, count, steps = TIME_ALL_SUMS, 2 * self.inner.config.num_hidden_layers, 1
        times = []
        for _ in range(repeats):
            times.append(self._time(op, count, self.inner.config.hidden_size, compute_dtype(self.inner)))
        return sorted(times)[len(times) // 2] / steps

    def time_all_sum(self, width: int, count: int = 10) -> float:
        """Seconds per all_sum of `width` float32 values, over the whole group: the link's latency (width 1)
        or its bandwidth (a few MB), for the bench."""
        return self._time(TIME_ALL_SUMS, count, width, mx.float32) / count

    def _time(self, op: int, count: int, width: int, dtype) -> float:
        # The followers read the width from the header's capacity slot, and the dtype from its kv-bits slot.
        _header(self.group, [op, count, width, 1 if dtype == mx.float32 else 0], (self.weight_bytes, 0))
        return TIMERS[op](self.group, count, width, dtype)


def follow(model, group, place: Place) -> None:
    """A follower's loop: run every forward pass rank 0 announces, on this rank's share, until it is stopped.

    Rank 0 ends the group by ending the processes (a follower waiting in an all_sum is in MLX, deaf to signals
    Python would handle), so there is no stop message."""
    caches: dict[int, KVCache] = {}
    own_bytes = weight_bytes(model)
    cache = None
    while True:
        op, number, capacity, bits, keep, length, n_tokens, probed = _header(group, [], (own_bytes, _kv_bytes(cache)))[
            :_FIELDS
        ]
        if op in TIMERS:
            TIMERS[op](group, number, capacity, mx.float32 if bits else compute_dtype(model))
            continue
        cache = None
        if number >= 0:
            if number not in caches:
                caches[number] = make_cache(model, CacheSettings(max_kv_size=capacity, kv_bits=bits or None))
                for old in sorted(caches)[:-_KEPT_CACHES]:
                    del caches[old]
            cache = caches[number]
            cache.keep, cache.length = keep, length
        tokens = mx.distributed.all_sum(mx.zeros((1, n_tokens), mx.int32), group=group)
        local = local_probe(place) if probed else None
        mx.eval(model.hidden_states(tokens, cache, local))
        if probed:
            keys = cache.length if cache is not None else n_tokens
            gather(local, place, group, keys, (1, n_tokens, model.config.hidden_size))
