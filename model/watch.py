"""Watching decode steps from inside: one layer's attention, and the logit lens.

The views that show these are open only sometimes, and the UI draws them a
few times a second, so a step is watched only while a view wants it and at
most once per `interval_s`. Every other step runs the plain forward pass.

A watched step runs the same forward pass with two additions, both lazy and
evaluated together with the step's logits:
- attention: the chosen layer's cache call is wrapped; after the fused
  kernel has attended (its output is what the model uses), the same q and
  the cached keys go through an explicit softmax(q k^T * scale), so the
  weights shown are those of the model's own query, recomputed in the open;
- logit lens: every block's output at the new position goes through the final
  norm and the output head, as the last block's output does for the real
  prediction, so the last layer's row is the model's own next-token
  distribution.
"""

import time
from dataclasses import dataclass
from typing import Callable, Optional

import mlx.core as mx

from .inspect import explicit_attention

LENS_TOP = 5  # candidates per layer


@dataclass(frozen=True)
class Watch:
    """What the open views want to see; the default watches nothing."""
    attention_layer: Optional[int] = None  # None: the attention view is closed
    lens: bool = False
    interval_s: float = 0.2  # at most one watched step per this many seconds

    @property
    def active(self) -> bool:
        return self.attention_layer is not None or self.lens


@dataclass(frozen=True)
class Inside:
    """What a watched step saw, read back to Python numbers."""
    layer: Optional[int]  # the attention layer, or None
    attention: tuple  # per head: weights over the S cached positions (oldest first); () if not watched
    positions: int  # S: tokens in the cache when this query attended (itself included)
    evicted_total: int  # the cache's eviction count then, to name the positions' tokens
    sink: int  # the cache's pinned tokens then
    lens_ids: tuple  # per layer: top LENS_TOP token ids, most likely first; () if not watched
    lens_probs: tuple  # per layer: their probabilities


def _attention_hook(cache, layer_index: int, out: dict):
    layer_cache = cache.layers[layer_index]
    original = layer_cache.update_and_attend

    def update_and_attend(q, k, v, scale, mask):
        result = original(q, k, v, scale, mask)
        end = cache.length + k.shape[2]
        keys, _ = layer_cache.stored(end)
        out["attention"] = explicit_attention(q, keys, scale)
        out["positions"] = end
        return result

    return update_and_attend


def lens_top(model, residuals: list, k: int = LENS_TOP):
    """Each block's output at the last position read through the final norm and the head: (ids, probs), lazy."""
    stacked = mx.concatenate([r[0, -1:, :] for r in residuals], axis=0)  # (layers, d)
    probs = mx.softmax(model.head(stacked).astype(mx.float32), axis=-1, precise=True)  # (layers, vocab)
    ids = mx.argpartition(-probs, kth=k - 1, axis=-1)[:, :k]
    return ids, mx.take_along_axis(probs, ids, axis=-1)


class StepWatcher:
    """The decode loop's forward pass, watched when a view asks for it."""

    def __init__(self, model, cache, watch: Callable[[], Watch], now: Callable[[], float] = time.perf_counter):
        self.model, self.cache, self.watch, self.now = model, cache, watch, now
        self._last = float("-inf")

    def forward(self, tokens: mx.array):
        """(logits (vocab,), lazy extras or None); extras are evaluated with the logits."""
        watch = self.watch()
        t = self.now()
        if not watch.active or t - self._last < watch.interval_s:
            return self.model(tokens, self.cache)[0, -1], None
        self._last = t
        out: dict = {}
        layer = watch.attention_layer
        if layer is not None and not 0 <= layer < len(self.cache.layers):
            layer = None
        if layer is not None:
            self.cache.layers[layer].update_and_attend = _attention_hook(self.cache, layer, out)
        residuals: Optional[list] = [] if watch.lens else None
        try:
            h = self.model.hidden_states(tokens, self.cache, collect=residuals)
        finally:
            if layer is not None:
                del self.cache.layers[layer].update_and_attend
        out["layer"] = layer
        out["evicted_total"], out["sink"] = self.cache.evicted_total, min(self.cache.keep, self.cache.length)
        if residuals is not None:
            out["lens_ids"], out["lens_probs"] = lens_top(self.model, residuals)
        return self.model.head(h)[0, -1], out


def arrays_of(extras: Optional[dict]) -> list:
    """The lazy arrays in a step's extras, to evaluate with the step."""
    if not extras:
        return []
    return [v for v in extras.values() if isinstance(v, mx.array)]


def read_inside(extras: dict) -> Inside:
    """Evaluated extras -> Python numbers (the engine thread calls this; the UI never sees MLX)."""
    attention = extras.get("attention")
    lens_ids, lens_probs = extras.get("lens_ids"), extras.get("lens_probs")
    if lens_ids is not None:
        order = mx.argsort(-lens_probs, axis=-1)
        lens_ids = mx.take_along_axis(lens_ids, order, axis=-1).tolist()
        lens_probs = mx.take_along_axis(lens_probs, order, axis=-1).tolist()
    return Inside(
        layer=extras["layer"],
        attention=tuple(tuple(row) for row in attention.tolist()) if attention is not None else (),
        positions=extras.get("positions", 0),
        evicted_total=extras["evicted_total"],
        sink=extras["sink"],
        lens_ids=tuple(tuple(r) for r in lens_ids) if lens_ids is not None else (),
        lens_probs=tuple(tuple(r) for r in lens_probs) if lens_probs is not None else (),
    )
