"""Build the KV cache a loaded model needs, from the user's cache settings."""

import mlx.core as mx

from .conversation import CacheSettings
from .kv_cache import KVCache


def compute_dtype(model) -> mx.Dtype:
    """The dtype activations (and so K and V) come out in."""
    norm = model.model.norm.weight.dtype
    embed = model.model.embed_tokens
    if hasattr(embed, "scales"):
        return embed.scales.dtype
    return embed.weight.dtype if mx.issubdtype(embed.weight.dtype, mx.floating) else norm


def make_cache(loaded, settings: CacheSettings) -> KVCache:
    if settings.kv_bits is not None:
        from .kv_quantized import QuantizedKVCache

        return QuantizedKVCache(loaded.config, settings.max_kv_size, loaded.model.rope.shift,
                                bits=settings.kv_bits, dtype=compute_dtype(loaded.model))
    return KVCache(loaded.config, settings.max_kv_size, loaded.model.rope.shift,
                   dtype=compute_dtype(loaded.model))
