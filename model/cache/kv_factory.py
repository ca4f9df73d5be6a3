"""Build the KV cache a model needs from cache settings: the one place a cache is made."""

import mlx.core as mx

from model.cache.kv_cache import KVCache
from model.cache.settings import CacheSettings, cache_problem
from model.errors import ModelError
from model.network.transformer import Transformer


def compute_dtype(model: Transformer) -> mx.Dtype:
    """The dtype activations (and so K and V) come out in."""
    norm = model.model.norm.weight.dtype
    embed = model.model.embed_tokens
    if hasattr(embed, "scales"):
        return embed.scales.dtype
    return embed.weight.dtype if mx.issubdtype(embed.weight.dtype, mx.floating) else norm


def make_cache(model: Transformer, settings: CacheSettings) -> KVCache:
    """A cache for `model` (a Transformer); settings it cannot take raise one line (ModelError).

    With `keep` None the sink starts empty: the conversation sizes it to the system prompt."""
    problem = cache_problem(settings)
    if problem:
        raise ModelError(problem)
    size, keep, dtype = settings.max_kv_size, settings.keep or 0, compute_dtype(model)
    if settings.kv_bits is not None:
        from model.cache.kv_quantized import QuantizedKVCache

        return QuantizedKVCache(model.config, size, model.key_shifts(), bits=settings.kv_bits, dtype=dtype, keep=keep)
    return KVCache(model.config, size, model.key_shifts(), keep=keep, dtype=dtype)
