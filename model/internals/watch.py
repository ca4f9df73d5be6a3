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
  the head call the step makes anyway, so the last layer's row is the model's
  own next-token distribution. On the CPU's quantized kernel the rows go in
  as few calls of at most `qmv.MAX_ROWS` as there can be: past that the head
  is dequantized whole (113 MB of float32 for the default model's 49k-token
  head), and 10 rows took 228 ms in one call against 10 ms as 5+5 (2 cores, loaded).

The lens's logits are evaluated with the step, then read back and turned into
each layer's top tokens with numpy on the engine thread, while MLX already runs
the next step: for 10 rows of 49k logits, softmax and top 3 took 1 ms in numpy
against 12 ms in MLX's CPU stream (its exp is the cost, see fast_math). Only
the last row, the model's own, is normalised by MLX, as the sampler does.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import mlx.core as mx
import numpy as np

from model.cache.kv_cache import KVCache
from model.internals.needs import StepNeeds
from model.kernels import qmv
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


def top_by_argmax(logprobs, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest per row, best first (the first of equals, as argmax picks), and their exps; numpy, on a copy."""
    rest = np.array(logprobs, dtype=np.float32)
    rows = np.arange(rest.shape[0])
    ids = np.empty((rest.shape[0], k), dtype=np.int64)
    values = np.empty((rest.shape[0], k), dtype=np.float32)
    for j in range(k):
        best = rest.argmax(axis=-1)
        ids[:, j], values[:, j] = best, rest[rows, best]
        rest[rows, best] = -np.inf
    return ids, np.exp(values)


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def head_rows(model: Transformer, rows: mx.array) -> mx.array:
    """The output head over a few rows (R, d) -> (R, vocab): in kernel-sized calls where the kernel takes them."""
    head = model.model.embed_tokens if model.config.tie_word_embeddings else model.lm_head
    n = rows.shape[0]
    if n <= qmv.MAX_ROWS or "scales" not in head or not qmv.applies(rows[:1], head):  # float heads: one GEMM
        return model.head(rows)
    calls = -(-n // qmv.MAX_ROWS)
    cuts = [n * i // calls for i in range(calls + 1)]  # even: 10 rows as 5+5, not 8+2
    return mx.concatenate([model.head(rows[a:b]) for a, b in zip(cuts, cuts[1:])], axis=0)


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
        # The lens rows and the step's own logits through the head together (the last row;
        # the last layer's output is h itself, so its lens row is that row too).
        layers = lens_rows(residuals, needs.lens_layers)
        rows = mx.concatenate([residuals[i][0, -1:, :] for i in layers[:-1]] + [h[0, -1:, :]], axis=0)
        logits = head_rows(self.model, rows)
        out["lens_layers"], out["lens_logits"] = tuple(layers), logits[:-1].astype(mx.float32)
        # The last row as the sampler reads it (MLX's own sum), so the lens's top row and the
        # Next token panel agree to the digit: over 49k tokens MLX's float32 sum is off by ~1e-4.
        out["lens_own"] = log_softmax(logits[-1].astype(mx.float32))
        return logits[-1], out


def read_inside(extras: dict) -> Inside:
    """Evaluated extras -> Python numbers (the engine thread calls this; the UI never sees MLX)."""
    attention = extras.get("attention")
    lens_ids = lens_probs = None
    if "lens_logits" in extras:
        # Evaluated with the step: these read it back, they do not run it again.
        rows = np.concatenate(
            [log_softmax_rows(np.asarray(extras["lens_logits"])), np.asarray(extras["lens_own"])[None]]
        )
        ids, probs = top_by_argmax(rows, LENS_TOP)
        lens_ids, lens_probs = ids.tolist(), probs.tolist()
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
