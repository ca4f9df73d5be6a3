"""The KV cache's settings as the user chooses them, and why a choice cannot make a cache. Plain data, no MLX."""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class CacheSettings:
    max_kv_size: int = 2048  # tokens; see README "The KV cache" for why
    keep: Optional[int] = None  # sink size; None pins the system prompt
    kv_bits: Optional[int] = None  # 4 or 8 to quantize K and V; None keeps the model's dtype


MIN_CAPACITY = 64  # below this a reply barely fits beside the system prompt


def keep_problem(keep: int, capacity: int) -> Optional[str]:
    """Why `keep` cannot be the sink of a cache of `capacity` tokens, or None.

    The sink may take at most half the cache, so the window after it always has room for a reply."""
    if 0 <= keep <= capacity // 2:
        return None
    return f"--keep {keep} must be between 0 and half the cache ({capacity // 2})."


def cache_problem(settings: CacheSettings) -> Optional[str]:
    """Why these settings cannot make a cache, in one line for the user, or None.

    (A model whose context is shorter than `max_kv_size` caps the cache, and the
    cache checks `keep` again against what it really holds.)"""
    if settings.max_kv_size < MIN_CAPACITY:
        return f"--max-kv-size {settings.max_kv_size} is too small: use at least {MIN_CAPACITY} tokens."
    if settings.keep is not None:
        return keep_problem(settings.keep, settings.max_kv_size)
    return None
