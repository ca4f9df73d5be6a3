"""The generation ladder: prefill -> sample -> decode one token -> decode many.

Decode is pipelined as in mlx-lm: token n+1's forward pass is queued with
`mx.async_eval` before token n is read back, so the CPU-side work of reading,
detokenizing and reporting overlaps the model's work. The cost: when the
consumer stops (end of turn, cancel), one token has been fed speculatively,
and `decode` rolls the cache back by one so it holds exactly what was shown.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

import mlx.core as mx

from model.runtime.sampling import draw, sampling_distribution, top_k_of
from model.runtime.settings import CacheSettings, SamplingSettings

if TYPE_CHECKING:  # for the hints only: the cache and the network import nothing from here
    from model.cache.kv_cache import KVCache
    from model.network.transformer import Transformer

PREFILL_CHUNK = 256  # bounds prefill's peak memory; big enough to keep BLAS busy


class Cancelled(Exception):
    """The user cancelled; work done so far is kept."""


@dataclass(frozen=True)
class Step:
    token_id: int
    prob: float  # of the sampled token, under the sampling distribution
    top_ids: tuple[int, ...]
    top_probs: tuple[float, ...]
    inside: Optional[dict] = None  # evaluated extras from a watched forward pass (see model.internals.watch)


def prefill(
    model: "Transformer",
    cache: "KVCache",
    ids: list[int],
    chunk_size: int = PREFILL_CHUNK,
    on_chunk: Callable[[list[int]], None] = lambda _: None,
    cancelled: Callable[[], bool] = lambda: False,
) -> mx.array:
    """Feed `ids` in chunks; returns the (lazy) logits after the last one, shape (vocab,)."""
    chunk_size = min(chunk_size, cache.window) if cache is not None else chunk_size
    for start in range(0, len(ids) - 1, chunk_size):
        chunk = ids[start : min(start + chunk_size, len(ids) - 1)]
        if cancelled():
            raise Cancelled
        model.hidden_states(mx.array([chunk]), cache)
        mx.eval([layer.keys for layer in cache.layers], [layer.values for layer in cache.layers])
        on_chunk(chunk)
    if cancelled():
        raise Cancelled
    # The last token alone, so only its logits are computed.
    logits = model(mx.array([ids[-1:]]), cache, last_only=True)[0, -1]
    on_chunk(ids[-1:])
    return logits


def sample_step(
    logits: mx.array, settings: SamplingSettings, key: Optional[mx.array], recent: mx.array, k: int
) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """Lazy: the sampled id, its probability, and the top-k of the sampling distribution."""
    logprobs = sampling_distribution(logits, settings, recent)
    token = draw(logprobs, settings, key)
    prob = mx.exp(logprobs[token])
    if k > 0:
        top_ids, top_probs = top_k_of(logprobs, k)
    else:
        top_ids, top_probs = mx.array([], mx.int32), mx.array([], mx.float32)
    return token, prob, top_ids, top_probs


Forward = Callable[[mx.array], tuple[mx.array, Optional[dict[str, Any]]]]


def _lazy(extras: Optional[dict]) -> list:
    return [v for v in (extras or {}).values() if isinstance(v, mx.array)]


def decode(
    model: "Transformer",
    cache: "KVCache",
    first_logits: mx.array,
    settings: SamplingSettings,
    max_tokens: int,
    key: Optional[mx.array] = None,
    recent_ids: Optional[list[int]] = None,
    top_k: Union[int, Callable[[], int]] = 10,
    forward: Optional[Forward] = None,
) -> Iterator[Step]:
    """Yield generated tokens until the consumer stops or `max_tokens` is reached.

    `top_k` rows of the sampled distribution come with each step (a function is
    asked at every step, so the views can change it mid-reply). `forward(tokens)
    -> (logits, extras)` replaces the plain forward pass (a watched step returns
    extras: lazy arrays evaluated with the step)."""
    if forward is None:

        def forward(tokens):
            return model(tokens, cache)[0, -1], None

    window = settings.repetition_window
    recent = mx.array((recent_ids or [])[-window:], dtype=mx.int32)
    use_recent = settings.repetition_penalty != 1.0

    def keys():
        nonlocal key
        if settings.greedy or key is None:
            return None
        key, sub = mx.random.split(key)
        return sub

    rows = top_k if callable(top_k) else lambda: top_k
    current = (*sample_step(first_logits, settings, keys(), recent, rows()), None)
    mx.async_eval(*current[:4])
    fed_ahead = False
    try:
        for n in range(max_tokens):
            fed_ahead = False
            if n + 1 < max_tokens:
                token = current[0]
                if use_recent:
                    recent = mx.concatenate([recent, token[None].astype(mx.int32)])[-window:]
                logits, extras = forward(token.reshape(1, 1))
                fed_ahead = True
                upcoming = (*sample_step(logits, settings, keys(), recent, rows()), extras)
                mx.async_eval(*upcoming[:4], *_lazy(extras))
            token, prob, top_ids, top_probs, extras = current
            yield Step(token.item(), prob.item(), tuple(top_ids.tolist()), tuple(top_probs.tolist()), extras)
            if fed_ahead:
                current = upcoming
    finally:
        if fed_ahead:
            # The consumer stopped after a token we had already fed: forget it.
            cache.rollback(1)


def warm_up(model: "Transformer") -> None:
    """One tiny prefill and decode step on a scratch cache, so the first message
    does not pay for kernel compilation and allocator growth."""
    from model.cache.kv_factory import make_cache

    cache = make_cache(model, CacheSettings(max_kv_size=64))
    logits = prefill(model, cache, [1, 2, 3, 4])
    mx.eval(model(mx.argmax(logits).reshape(1, 1), cache))
