"""What a forward pass asks of the KV cache it is handed: the network's side of the contract.

The model holds no state; each call is given a cache (model.cache.kv_cache.KVCache is
the one there is) and uses only this much of it. Written down here, as a Protocol, so
the network does not import the cache package, which is built on the network's attention.
"""

from collections.abc import Sequence
from typing import Protocol

import mlx.core as mx

from model.network.attention import KV, Mask


class LayerKV(Protocol):
    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[KV, KV]:
        """Store one layer's new keys and values; return every one the new queries may see, oldest first."""


class StepCache(Protocol):
    layers: Sequence[LayerKV]

    def begin(self, n: int) -> int:
        """Make room for `n` new tokens (evicting if full); the first one's position."""

    def window_mask(self, n: int) -> Mask:
        """The sliding-window layers' mask for `n` new queries over what those layers fetch."""

    def commit(self, n: int) -> None:
        """The `n` tokens begun are now held."""
