"""Sampling as pure functions over logits: penalty, temperature, filters, then a draw.

`sampling_distribution` gives the log-probabilities actually sampled from,
which is also what the top-k panel shows. At temperature 0 the draw is an
argmax, and the panel shows the model's own distribution at temperature 1.
"""

from typing import Optional

import mlx.core as mx

from model.network.fast_math import log_softmax
from model.runtime.settings import SamplingSettings

NEG_INF = float("-inf")


def apply_repetition_penalty(logits: mx.array, recent: mx.array, penalty: float) -> mx.array:
    """CTRL's rule: divide positive logits of seen tokens by `penalty`, multiply negative ones."""
    if penalty == 1.0 or recent.size == 0:
        return logits
    seen = logits[recent]
    logits[recent] = mx.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def filter_top_k(logprobs: mx.array, k: int) -> mx.array:
    if k <= 0 or k >= logprobs.shape[-1]:
        return logprobs
    kth = mx.topk(logprobs, k, axis=-1)[..., :1].min(axis=-1, keepdims=True)
    return mx.where(logprobs >= kth, logprobs, NEG_INF)


def filter_top_p(logprobs: mx.array, p: float) -> mx.array:
    if p >= 1.0:
        return logprobs
    order = mx.argsort(-logprobs, axis=-1)
    sorted_lp = mx.take_along_axis(logprobs, order, axis=-1)
    cumulative = mx.cumsum(mx.exp(sorted_lp), axis=-1)
    # Keep a token if the mass before it is still under p (so the top one always stays).
    keep_sorted = (cumulative - mx.exp(sorted_lp)) < p
    keep = mx.put_along_axis(mx.zeros_like(keep_sorted), order, keep_sorted, axis=-1)
    return mx.where(keep, logprobs, NEG_INF)


def filter_min_p(logprobs: mx.array, min_p: float) -> mx.array:
    if min_p <= 0.0:
        return logprobs
    threshold = logprobs.max(axis=-1, keepdims=True) + mx.log(mx.array(min_p))
    return mx.where(logprobs >= threshold, logprobs, NEG_INF)


def sampling_distribution(logits: mx.array, settings: SamplingSettings, recent: mx.array) -> mx.array:
    """Log-probabilities of the distribution the next token is drawn from (filters renormalised)."""
    logits = apply_repetition_penalty(logits.astype(mx.float32), recent, settings.repetition_penalty)
    if settings.greedy:
        return log_softmax(logits)
    logprobs = log_softmax(logits / settings.temperature)
    logprobs = filter_top_k(logprobs, settings.top_k)
    logprobs = filter_top_p(logprobs, settings.top_p)
    logprobs = filter_min_p(logprobs, settings.min_p)
    return log_softmax(logprobs)


def draw(logprobs: mx.array, settings: SamplingSettings, key: Optional[mx.array]) -> mx.array:
    if settings.greedy:
        return mx.argmax(logprobs, axis=-1)
    return mx.random.categorical(logprobs, axis=-1, key=key)


def top_k_of(logprobs: mx.array, k: int) -> tuple[mx.array, mx.array]:
    """The k most likely ids with their probabilities, best first (argpartition does not sort)."""
    ids = mx.argpartition(-logprobs, k - 1, axis=-1)[..., :k]
    probs = mx.exp(mx.take_along_axis(logprobs, ids, axis=-1))
    order = mx.argsort(-probs, axis=-1)
    return mx.take_along_axis(ids, order, axis=-1), mx.take_along_axis(probs, order, axis=-1)
