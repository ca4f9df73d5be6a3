"""Build the KV cache a loaded model needs, from the user's cache settings."""

import mlx.core as mx

from model.cache.kv_cache import KVCache
from model.errors import ModelError
from model.runtime.conversation import MIN_CAPACITY
from model.runtime.settings import CacheSettings


def compute_dtype(model) -> mx.Dtype:
    """The dtype activations (and so K and V) come out in."""
    norm = model.model.norm.weight.dtype
    embed = model.model.embed_tokens
    if hasattr(embed, "scales"):
        return embed.scales.dtype
    return embed.weight.dtype if mx.issubdtype(embed.weight.dtype, mx.floating) else norm


def make_cache(loaded, settings: CacheSettings) -> KVCache:
    if settings.max_kv_size < MIN_CAPACITY:
        raise ModelError(f"--max-kv-size {settings.max_kv_size} is too small: use at least {MIN_CAPACITY} tokens.")
    if settings.kv_bits is not None:
        from model.cache.kv_quantized import QuantizedKVCache

        return QuantizedKVCache(
            loaded.config,
            settings.max_kv_size,
            loaded.model.rope.shift,
            bits=settings.kv_bits,
            dtype=compute_dtype(loaded.model),
        )
    return KVCache(loaded.config, settings.max_kv_size, loaded.model.rope.shift, dtype=compute_dtype(loaded.model))
