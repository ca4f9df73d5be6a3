"""Watching decode steps from inside: one layer's attention, and the logit lens.

The views that show these are open only sometimes, and the UI draws them a
few times a second, so a step is watched only while a view wants it and at
most once per `interval_s`. Every other step runs the plain forward pass.

A watched step runs the same forward pass with a probe (see
model.network.probe) and two additions, both lazy and evaluated together with
the step's logits:
- attention: the probe keeps the chosen layer's query and the keys the cache
  returned; they go through an explicit softmax(q k^T * scale), so the
  weights shown are those of the model's own query, recomputed in the open
  (the fused kernel's output is still what the model uses);
- logit lens: the chosen blocks' outputs at the new position go through the
  final norm and the output head together with the last block's output, in
  the one head call the step makes anyway (the head's weights are read once:
  on CPU that read is most of the head's cost), so the last layer's row is
  the model's own next-token distribution.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import mlx.core as mx

from model.cache.kv_cache import KVCache
from model.internals.needs import StepNeeds
from model.network.fast_math import log_softmax
from model.network.probe import Probe
from model.network.transformer import Transformer

LENS_TOP = 3  # candidates per layer (the view shows two)


@dataclass(frozen=True)
class Inside:
    """What a watched step saw, read back to Python numbers."""

    layer: Optional[int]  # the attention layer, or None
    attention: tuple  # per head: weights over the S cached positions (oldest first); () if not watched
    attention_mean: tuple  # the same, averaged over the heads
    evicted_total: int  # the cache's eviction count then, to name the positions' tokens
    sink: int  # the cache's pinned tokens then
    lens_layers: tuple  # the layers read, bottom to top; () if not watched
    lens_ids: tuple  # per layer read: top LENS_TOP token ids, most likely first
    lens_probs: tuple  # per layer read: their probabilities


def top_by_argmax(logprobs: mx.array, k: int) -> tuple[mx.array, mx.array]:
    """The k largest per row, best first, by k argmax passes (cheaper than a partition for k <= 3 on CPU)."""
    ids, values = [], []
    for _ in range(k):
        best = mx.argmax(logprobs, axis=-1, keepdims=True)
        ids.append(best)
        values.append(mx.take_along_axis(logprobs, best, axis=-1))
        logprobs = mx.put_along_axis(logprobs, best, mx.array(-mx.inf, logprobs.dtype), axis=-1)
    return mx.concatenate(ids, axis=-1), mx.exp(mx.concatenate(values, axis=-1))


def lens_rows(residuals: list, layers: tuple[int, ...]) -> list[int]:
    """The layers to read, bottom to top (all of them for `()`), the last always included."""
    last = len(residuals) - 1
    return sorted({*(layers or range(last + 1)), last} & set(range(last + 1)))


class StepWatcher:
    """The decode loop's forward pass, watched when a view asks for it.

    The loop reads the views' needs once per step and hands the same value to `due` and
    `forward`, so one step never mixes two of them (the UI may swap it at any time)."""

    def __init__(self, model: Transformer, cache: KVCache, now: Callable[[], float] = time.perf_counter) -> None:
        self.model, self.cache, self.now = model, cache, now
        self._last = float("-inf")

    def due(self, needs: StepNeeds) -> bool:
        """Whether the views want the next step (prompt lookup then runs it as a plain step)."""
        return needs.watched and self.now() - self._last >= needs.interval_s

    def forward(self, tokens: mx.array, needs: StepNeeds) -> tuple[mx.array, Optional[dict]]:
        """(logits (vocab,), lazy extras or None); extras are evaluated with the logits."""
        t = self.now()
        if not needs.watched or t - self._last < needs.interval_s:
            return self.model(tokens, self.cache)[0, -1], None
        self._last = t
        layer = needs.attention_layer
        lens = needs.lens_layers is not None
        probe = Probe(attention_layers=() if layer is None else (layer,), hidden=lens)
        h = self.model.hidden_states(tokens, self.cache, probe)
        # A layer the model does not have is simply not recorded. (Not checked against the cache: a
        # pipeline stage's cache holds its own blocks, but its probe is given every block's, gathered.)
        layer = layer if layer in probe.attention else None
        out: dict = {"layer": layer, "evicted_total": self.cache.evicted_total}
        out["sink"] = min(self.cache.keep, self.cache.length)
        if layer is not None:
            out["attention"] = weights = probe.attention[layer].weights()
            out["attention_mean"] = weights.mean(axis=0)  # once, here: the engine and the view both need it
        if not lens:
            return self.model.head(h)[0, -1], out
        residuals = probe.hidden_states
        # One head call for the lens rows and the step's own logits (the last row;
        # the last layer's output is h itself, so its lens row is that row too).
        layers = lens_rows(residuals, needs.lens_layers)
        rows = mx.concatenate([residuals[i][0, -1:, :] for i in layers[:-1]] + [h[0, -1:, :]], axis=0)
        logits = self.model.head(rows)
        ids, probs = top_by_argmax(log_softmax(logits.astype(mx.float32)), LENS_TOP)
        out["lens_layers"], out["lens_ids"], out["lens_probs"] = tuple(layers), ids, probs
        return logits[-1], out


def read_inside(extras: dict) -> Inside:
    """Evaluated extras -> Python numbers (the engine thread calls this; the UI never sees MLX)."""
    attention = extras.get("attention")
    lens_ids, lens_probs = extras.get("lens_ids"), extras.get("lens_probs")
    if lens_ids is not None:
        lens_ids, lens_probs = lens_ids.tolist(), lens_probs.tolist()
    return Inside(
        layer=extras["layer"],
        attention=tuple(tuple(row) for row in attention.tolist()) if attention is not None else (),
        attention_mean=tuple(extras["attention_mean"].tolist()) if attention is not None else (),
        evicted_total=extras["evicted_total"],
        sink=extras["sink"],
        lens_layers=extras.get("lens_layers", ()),
        lens_ids=tuple(tuple(r) for r in lens_ids) if lens_ids is not None else (),
        lens_probs=tuple(tuple(r) for r in lens_probs) if lens_probs is not None else (),
    )
