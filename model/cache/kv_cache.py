"""The KV cache: one per conversation, fixed capacity, a pinned sink, block eviction; windowed layers keep less.

Layout of a layer's keys and values, along the sequence axis:

    [ sink (keep) | window, oldest first | free ]
      0 .. keep-1   keep .. length-1       length .. allocated-1

Tokens are stored in position order and position == index, so the next token's
RoPE position is `length`, never more than `capacity - 1`. When a step would
overflow, a block of the oldest window tokens is dropped in one go: the rest
of the window slides left by `count` and its keys are rotated back by `count`
positions (RoPE rotations compose), as llama.cpp's context shift does. That
costs one copy per eviction, not per token, so decode right after an eviction
runs as fast as before it, memory stays at `capacity`, and positions never
pass the model's trained context however long the chat runs.

Each layer shifts its keys with its own RoPE (Gemma 3's windowed layers have
their own base; SmolLM3's layers without RoPE shift nothing). A sliding-window
layer (Gemma 2/3) needs only the last `sliding_window` tokens of what the cache
holds, so it also drops, on its own, the tokens no query will see again (see
`LayerCache`): its memory is bounded by the window, not by the capacity.
"""

from collections.abc import Callable, Sequence
from typing import Optional, Union

import mlx.core as mx

from model import compute_path
from model.cache.settings import keep_problem
from model.cache.state import CacheState
from model.errors import ModelError
from model.network.attention import KV, plain, window_mask
from model.network.config import ModelConfig

ALLOC_STEP = 256  # grow storage in steps, so short chats stay small
Shift = Callable[[mx.array, int], mx.array]  # keys, delta -> keys re-rotated by delta positions


class LayerCache:
    """One layer's keys and values; the owner decides the positions, the layer where they are stored.

    A global layer stores position p in slot p. A windowed layer keeps the sink too (a short
    chat's windowed query still sees it), but once it must make room it drops the oldest
    tokens after the sink that no query can see any more: `dropped` of them, so position p
    sits in slot p - dropped. Every query's visible keys are then one contiguous run of slots.
    """

    def __init__(self, owner: "KVCache", shift_keys: Optional[Shift], window: Optional[int] = None):
        self.owner = owner
        self.shift_keys = shift_keys  # this layer's RoPE shift; None for a layer without RoPE
        self.window = window  # sliding window in tokens; None for a global layer
        self.keys = None  # (1, n_kv_heads, allocated, head_dim)
        self.values = None
        self.dropped = 0

    def slot(self, position: int) -> int:
        return position if position < self.owner.keep else position - self.dropped

    def first_visible(self, position: int) -> int:
        """The oldest position a query at `position` attends to."""
        return 0 if self.window is None else max(0, position - self.window + 1)

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[KV, KV]:
        """Store the new keys and values after those held; return every one the new queries may see, oldest first."""
        start = self.owner.length
        end = start + k.shape[2]
        self.write(self.slot(start), k, v)
        return self.fetch(self.slot(self.first_visible(start)), self.slot(end))

    # --- room: the owner's eviction, and a windowed layer's own drops ------

    def make_room(self, length: int, n: int) -> None:
        """Before `n` new tokens at `length`: drop what no query will see (windowed layers), then grow."""
        if self.window is not None and self.slot(length + n) > self.max_slots():
            first = self.first_visible(length)
            self.slide(self.slot(first), self.owner.keep, length - first, None)
            self.dropped = first - self.owner.keep
        needed = self.slot(length + n)
        allocated = 0 if self.keys is None else self.allocated()
        if needed > allocated:
            size = min(self.max_slots(), -(-needed // ALLOC_STEP) * ALLOC_STEP)
            self.allocate((1, self.owner.config.num_key_value_heads, size, self.owner.config.head_dim))

    def evict(self, count: int, length: int) -> None:
        """The owner dropped positions keep .. keep+count-1: the survivors move down to the sink and turn back by `count`."""
        keep = self.owner.keep
        first = max(keep + self.dropped, keep + count)  # the first survivor this layer holds
        turn = None if self.shift_keys is None else (lambda keys: self.shift_keys(keys, -count))
        self.slide(self.slot(first), keep, length - first, turn)
        self.dropped = first - count - keep

    def max_slots(self) -> int:
        """A global layer may fill the capacity; a windowed one needs the sink, its window and the owner's slack."""
        if self.window is None:
            return self.owner.capacity
        return min(self.owner.capacity, self.owner.keep + self.window + self.owner.window_slack)

    def rollback_ok(self, length: int) -> bool:
        """Whether a query at `length` still finds every key it needs (a windowed layer may have dropped them)."""
        return self.dropped == 0 or self.first_visible(length) >= self.owner.keep + self.dropped

    # --- storage hooks, overridden by the quantized cache -------------------

    def write(self, slot: int, k: mx.array, v: mx.array) -> None:
        end = slot + k.shape[2]
        self.keys[..., slot:end, :] = k
        self.values[..., slot:end, :] = v

    def fetch(self, begin: int, end: int) -> tuple[KV, KV]:
        return self.keys[..., begin:end, :], self.values[..., begin:end, :]

    def allocated(self) -> int:
        return self.keys.shape[2]

    def allocate(self, shape: tuple[int, int, int, int], dtype: Optional[mx.Dtype] = None) -> None:
        dtype = dtype or self.owner.dtype
        grown_k, grown_v = mx.zeros(shape, dtype), mx.zeros(shape, dtype)
        if self.keys is not None:
            n = min(self.keys.shape[2], shape[2])
            grown_k[..., :n, :] = self.keys[..., :n, :]
            grown_v[..., :n, :] = self.values[..., :n, :]
        self.keys, self.values = grown_k, grown_v

    def slide(self, src: int, dst: int, count: int, turn: Optional[Callable[[mx.array], mx.array]]) -> None:
        """Move `count` tokens from slot `src` to slot `dst` (<= src), turning the keys with `turn` if given."""
        moved_k = self.keys[..., src : src + count, :]
        moved_v = self.values[..., src : src + count, :]
        self.keys[..., dst : dst + count, :] = moved_k if turn is None else turn(moved_k)
        self.values[..., dst : dst + count, :] = moved_v

    def stored(self, end: int) -> tuple[mx.array, mx.array]:
        """The keys and values held for positions up to `end`, in the model's dtype (for tests and views)."""
        keys, values = self.fetch(0, self.slot(end))
        return plain(keys), plain(values)

    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes


class KVCache:
    layer_class = LayerCache

    def __init__(
        self,
        config: ModelConfig,
        capacity: int,
        shift_keys: Union[Shift, Sequence[Optional[Shift]]],
        keep: int = 4,
        dtype: mx.Dtype = mx.float32,
        evict_fraction: float = 0.25,
        window_slack: int = 2 * ALLOC_STEP,
    ):
        """`shift_keys`: each layer's RoPE shift (`Transformer.key_shifts()`), or one for every layer.

        `window_slack`: slots a windowed layer keeps beyond its window: room for the longest step
        (a prefill chunk, at most ALLOC_STEP) and as many decode steps again before it drops the
        tokens it no longer needs (one copy of its window per ALLOC_STEP tokens)."""
        if capacity > config.max_position_embeddings:
            capacity = config.max_position_embeddings  # RoPE must stay inside the trained context
        problem = keep_problem(keep, capacity)
        if problem:
            raise ModelError(problem)
        self.config = config
        self.capacity = capacity
        self.keep = keep
        self.dtype = dtype
        self.evict_fraction = evict_fraction
        self.window_slack = window_slack
        n = config.num_hidden_layers
        shifts = list(shift_keys) if isinstance(shift_keys, Sequence) else [shift_keys] * n
        windowed = set(config.sliding_layers) if config.sliding_window else set()
        self.layers = [
            self.layer_class(self, shifts[i], config.sliding_window if i in windowed else None) for i in range(n)
        ]
        self.length = 0
        self.evicted_total = 0
        self.last_evicted = 0

    # --- the model's side: make room, write, commit -----------------------

    @property
    def evictable(self) -> int:
        """Slots for tokens after the sink: what eviction may drop. (A layer's `window` is its sliding window.)"""
        return self.capacity - self.keep

    @property
    def sliding_window(self) -> Optional[int]:
        return self.config.sliding_window if any(layer.window for layer in self.layers) else None

    def begin(self, n: int) -> int:
        """Make room for `n` new tokens and return the position of the first."""
        if n > self.evictable:
            raise ValueError(f"a step of {n} tokens cannot fit the {self.evictable} slots after the sink")
        if self.sliding_window and n > self.window_slack:
            raise ValueError(f"a step of {n} tokens does not fit a windowed layer's slack of {self.window_slack}")
        self.evict(self._eviction_for(n))
        for layer in self.layers:
            layer.make_room(self.length, n)
        return self.length

    def _eviction_for(self, n: int) -> int:
        """How many tokens a step of `n` evicts: none if they fit, else a block of at least a quarter of the evictable."""
        overflow = self.length + n - self.capacity
        if overflow <= 0:
            return 0
        return min(max(overflow, int(self.evictable * self.evict_fraction)), self.length - self.keep)

    def window_mask(self, n: int):
        """The mask for the windowed layers' `n` new queries over the keys they fetch (see `LayerCache`)."""
        return window_mask(self.length, n, self.sliding_window)

    def step_room(self) -> int:
        """The most tokens one step can write and still evict when, and what, one-token steps would.

        A speculative step writes several tokens and may roll some back. Below capacity
        it must stop at the free slots: one that overflowed would evict a block early,
        and after a rollback the cache would lack tokens plain decoding still holds. At
        capacity a one-token step evicts a block first; a step no longer than that block
        evicts the same one, and its tokens then fit."""
        free = self.capacity - self.length
        return free if free > 0 else self._eviction_for(1)

    def commit(self, n: int) -> None:
        self.length += n

    def can_rollback(self, n: int) -> bool:
        """Whether forgetting the last `n` tokens leaves every key the next query needs (a windowed layer
        keeps only about its window: a long rollback there means reading the tokens again)."""
        length = max(0, self.length - n)
        return all(layer.rollback_ok(length) for layer in self.layers)

    def rollback(self, n: int) -> None:
        """Forget the last `n` tokens written (a speculative step the user never saw, a branch left)."""
        if not self.can_rollback(n):
            raise ValueError(f"cannot roll back {n} tokens: a windowed layer has dropped keys the next query needs")
        self.length = max(0, self.length - n)

    def restart_at(self, n: int) -> None:
        """Keep only the first `n` tokens ever fed (`n` <= keep): the sink never slides, so they are still
        in place; used when a branch point was evicted and the rest must be read again."""
        if n > self.keep:
            raise ValueError(f"only the sink ({self.keep} tokens) survives evictions, not {n} tokens")
        self.length = n
        self.evicted_total = 0
        self.last_evicted = 0
        for layer in self.layers:
            layer.dropped = 0  # a windowed layer's sink is in place too; what followed it is read again

    def evict(self, count: int) -> None:
        """Drop the `count` oldest tokens after the sink; the rest slide left, each layer re-rotating its keys."""
        if count <= 0:
            return
        for layer in self.layers:
            layer.evict(count, self.length)
        self.length -= count
        self.evicted_total += count
        self.last_evicted = count

    # --- what the panels read ---------------------------------------------

    def reset(self) -> None:
        self.length = 0
        self.evicted_total = 0
        self.last_evicted = 0
        for layer in self.layers:
            layer.dropped = 0

    def bytes_per_slot(self) -> int:
        """K and V of one token in one layer."""
        return 2 * self.config.num_key_value_heads * self.config.head_dim * self.dtype.size

    def bytes_per_token(self) -> int:
        return self.bytes_per_slot() * self.config.num_hidden_layers

    def dtype_name(self) -> str:
        return str(self.dtype).replace("mlx.core.", "")

    def state(self) -> CacheState:
        windowed = [layer for layer in self.layers if layer.window]
        bytes_windowed = sum(layer.nbytes() for layer in windowed)
        bytes_total = sum(layer.nbytes() for layer in self.layers)
        return CacheState(
            tokens=self.length,
            capacity=self.capacity,
            sink_tokens=min(self.keep, self.length),
            evicted_total=self.evicted_total,
            bytes=bytes_total,
            bytes_full=sum(layer.max_slots() for layer in self.layers) * self.bytes_per_slot(),
            position=self.length - self._eviction_for(1),  # a full cache evicts before the next token
            dtype=self.dtype_name(),
            last_evicted=self.last_evicted,
            bytes_global=bytes_total - bytes_windowed,
            bytes_windowed=bytes_windowed,
            windowed_layers=len(windowed),
            window=self.sliding_window or 0,
            **allocator_figures(),
        )


def allocator_figures() -> dict:
    """On the gpu path, MLX's own count of the memory it holds (a GPU's memory is not the process's RSS)."""
    if not compute_path.on_gpu():
        return {}
    return {"mlx_active": mx.get_active_memory(), "mlx_peak": mx.get_peak_memory()}
