"""The KV cache: one per conversation, fixed capacity, a pinned sink, block eviction.

Layout of every layer's keys and values, along the sequence axis:

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
"""

from collections.abc import Callable

import mlx.core as mx

from model.errors import ModelError
from model.loading.config import ModelConfig
from model.network.attention import KV, plain
from model.runtime.settings import keep_problem
from model.runtime.stats import CacheState

ALLOC_STEP = 256  # grow storage in steps, so short chats stay small


class LayerCache:
    """One layer's keys and values; the owner decides where new ones go."""

    def __init__(self, owner: "KVCache"):
        self.owner = owner
        self.keys = None  # (1, n_kv_heads, allocated, head_dim)
        self.values = None

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[KV, KV]:
        """Store the new keys and values after those held; return all of them, oldest first, for attention."""
        start, end = self.owner.length, self.owner.length + k.shape[2]
        self.keys[..., start:end, :] = k
        self.values[..., start:end, :] = v
        return self.fetch(end)

    # Storage hooks, overridden by the quantized cache.
    def fetch(self, end: int) -> tuple[KV, KV]:
        """Keys and values for positions 0..end-1, as stored."""
        return self.keys[..., :end, :], self.values[..., :end, :]

    def allocate(self, shape: tuple[int, int, int, int], dtype: mx.Dtype) -> None:
        grown_k, grown_v = mx.zeros(shape, dtype), mx.zeros(shape, dtype)
        if self.keys is not None:
            n = self.keys.shape[2]
            grown_k[..., :n, :] = self.keys
            grown_v[..., :n, :] = self.values
        self.keys, self.values = grown_k, grown_v

    def slide(self, src: int, dst: int, count: int, shift_keys: Callable) -> None:
        """Move `count` tokens from `src` to `dst` (< src), re-rotating keys by dst - src."""
        moved_k = shift_keys(self.keys[..., src : src + count, :], dst - src)
        moved_v = self.values[..., src : src + count, :]
        self.keys[..., dst : dst + count, :] = moved_k
        self.values[..., dst : dst + count, :] = moved_v

    def stored(self, end: int) -> tuple[mx.array, mx.array]:
        """Keys and values for positions 0..end-1 in the model's dtype (for tests and views)."""
        keys, values = self.fetch(end)
        return plain(keys), plain(values)

    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes


class KVCache:
    layer_class = LayerCache

    def __init__(
        self,
        config: ModelConfig,
        capacity: int,
        shift_keys: Callable[[mx.array, int], mx.array],
        keep: int = 4,
        dtype: mx.Dtype = mx.float32,
        evict_fraction: float = 0.25,
    ):
        if capacity > config.max_position_embeddings:
            capacity = config.max_position_embeddings  # RoPE must stay inside the trained context
        problem = keep_problem(keep, capacity)
        if problem:
            raise ModelError(problem)
        self.config = config
        self.capacity = capacity
        self.keep = keep
        self.dtype = dtype
        self.shift_keys = shift_keys
        self.evict_fraction = evict_fraction
        self.layers = [self.layer_class(self) for _ in range(config.num_hidden_layers)]
        self.length = 0
        self.allocated = 0
        self.evicted_total = 0
        self.last_evicted = 0

    # --- the model's side: make room, write, commit -----------------------

    @property
    def window(self) -> int:
        """Slots for tokens after the sink."""
        return self.capacity - self.keep

    def begin(self, n: int) -> int:
        """Make room for `n` new tokens and return the position of the first."""
        if n > self.window:
            raise ValueError(f"a step of {n} tokens cannot fit a cache window of {self.window}")
        self.evict(self._eviction_for(n))
        self._ensure_allocated(self.length + n)
        return self.length

    def _eviction_for(self, n: int) -> int:
        """How many tokens a step of `n` evicts: none if they fit, else a block of at least a quarter window."""
        overflow = self.length + n - self.capacity
        if overflow <= 0:
            return 0
        return min(max(overflow, int(self.window * self.evict_fraction)), self.length - self.keep)

    def commit(self, n: int) -> None:
        self.length += n

    def rollback(self, n: int) -> None:
        """Forget the last `n` tokens written (a speculative step the user never saw)."""
        self.length = max(0, self.length - n)

    def restart_at(self, n: int) -> None:
        """Keep only the first `n` tokens ever fed (`n` <= keep): the sink never slides, so they are still
        in place; used when a branch point was evicted and the rest must be read again."""
        if n > self.keep:
            raise ValueError(f"only the sink ({self.keep} tokens) survives evictions, not {n} tokens")
        self.length = n
        self.evicted_total = 0
        self.last_evicted = 0

    def evict(self, count: int) -> None:
        """Drop the `count` oldest tokens after the sink; the rest slide left."""
        if count <= 0:
            return
        src, dst = self.keep + count, self.keep
        survivors = self.length - src
        for layer in self.layers:
            layer.slide(src, dst, survivors, self.shift_keys)
        self.length -= count
        self.evicted_total += count
        self.last_evicted = count

    def _ensure_allocated(self, needed: int) -> None:
        if needed <= self.allocated:
            return
        size = min(self.capacity, -(-needed // ALLOC_STEP) * ALLOC_STEP)
        shape = (1, self.config.num_key_value_heads, size, self.config.head_dim)
        for layer in self.layers:
            layer.allocate(shape, self.dtype)
        self.allocated = size

    # --- what the panels read ---------------------------------------------

    def reset(self) -> None:
        self.length = 0
        self.evicted_total = 0
        self.last_evicted = 0

    def bytes_per_token(self) -> int:
        per_layer = 2 * self.config.num_key_value_heads * self.config.head_dim * self.dtype.size
        return per_layer * self.config.num_hidden_layers

    def dtype_name(self) -> str:
        return str(self.dtype).replace("mlx.core.", "")

    def state(self) -> CacheState:
        return CacheState(
            tokens=self.length,
            capacity=self.capacity,
            sink_tokens=min(self.keep, self.length),
            evicted_total=self.evicted_total,
            bytes=sum(layer.nbytes() for layer in self.layers),
            bytes_full=self.capacity * self.bytes_per_token(),
            position=self.length - self._eviction_for(1),  # a full cache evicts before the next token
            dtype=self.dtype_name(),
            last_evicted=self.last_evicted,
        )
