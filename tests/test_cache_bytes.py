"""Cache bytes and bytes-when-full, worked out by hand and measured by MLX's allocator.

README: the cache reports "the bytes of the K and V arrays as allocated (sum of
`nbytes`), the bytes a full cache takes"; 2048 tokens of the default model are
"90 MB of float32 keys and values (46 KB a token)"; memory is flat after the
first eviction. Each expected number here is layers x KV heads x head size x
bytes per element x 2 (K and V) x tokens, written out; the quantized layout adds
a scale and a bias per group of 32. And `mx.get_active_memory()`, MLX's own count
of the memory its live arrays hold, must move by exactly what the cache reports.
"""

import gc

import mlx.core as mx
import pytest

from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings

# SmolLM2-135M: 30 layers, 3 KV heads of 64 (from the GGUF's metadata; checked below).
LAYERS, KV_HEADS, HEAD_DIM = 30, 3, 64
FLOAT32_PER_TOKEN = 2 * LAYERS * KV_HEADS * HEAD_DIM * 4  # 46,080 B: "46 KB a token"
# Quantized, per head and per K or V: HEAD_DIM values at `bits` each, then a
# float32 scale and a float32 bias for each of the 64 / 32 = 2 groups.
Q8_PER_TOKEN = 2 * LAYERS * KV_HEADS * (HEAD_DIM * 8 // 8 + 2 * 2 * 4)  # 14,400 B
Q4_PER_TOKEN = 2 * LAYERS * KV_HEADS * (HEAD_DIM * 4 // 8 + 2 * 2 * 4)  # 8,640 B


def allocated_by(build):
    """(result of build(), bytes of live MLX memory it added)."""
    gc.collect()
    mx.clear_cache()  # freed buffers parked in MLX's pool would blur the count
    before = mx.get_active_memory()
    result = build()
    gc.collect()
    return result, mx.get_active_memory() - before


def fill(cache, steps):
    """Make room for and commit `steps` token counts, as forward passes do; evaluate the storage."""
    for n in steps:
        cache.begin(n)
        cache.commit(n)
    arrays = [layer.keys for layer in cache.layers] + [layer.values for layer in cache.layers]
    mx.eval(arrays)
    return cache


def test_the_default_models_shape(default_model):
    c = default_model.config
    assert (c.num_hidden_layers, c.num_key_value_heads, c.head_dim) == (LAYERS, KV_HEADS, HEAD_DIM)
    assert FLOAT32_PER_TOKEN == 46_080 and 2048 * FLOAT32_PER_TOKEN == 90 * 2**20  # the README's figures


@pytest.mark.parametrize(
    "kv_bits, per_token, dtype",
    [(None, FLOAT32_PER_TOKEN, "float32"), (8, Q8_PER_TOKEN, "q8"), (4, Q4_PER_TOKEN, "q4")],
)
def test_bytes_now_and_when_full(default_model, kv_bits, per_token, dtype):
    capacity = 1024
    cache, grown = allocated_by(
        lambda: fill(make_cache(default_model.model, CacheSettings(capacity, 4, kv_bits)), [200])
    )
    state = cache.state()
    assert state.dtype.startswith(dtype)
    assert state.bytes_full == capacity * per_token
    # Storage grows in blocks ahead of the tokens, never past the capacity; what is
    # reported is exactly what MLX holds for it.
    assert state.bytes == grown
    assert 200 * per_token <= state.bytes < capacity * per_token and state.bytes % per_token == 0

    # Filled, then evicting again and again: the full size, and not a byte more.
    _, grown_more = allocated_by(lambda: fill(cache, [250, 250, 250, 74]))
    assert cache.length == capacity and cache.evicted_total == 0
    assert cache.state().bytes == state.bytes + grown_more == capacity * per_token
    for _ in range(6):
        _, after_eviction = allocated_by(lambda: fill(cache, [200, 1, 1]))
        assert after_eviction == 0
        assert cache.state().bytes == cache.state().bytes_full == capacity * per_token
    assert cache.evicted_total > capacity


def test_nothing_is_copied_per_token(monkeypatch):
    """Counted, not timed: storage is allocated in blocks and slid only at an eviction, never per token.

    (README: "nothing is copied per token".) 300 single-token steps through a
    64-token cache: one allocation per layer (64 < one 256-token block), and one
    slide per layer per eviction; the other steps only write their own slot."""
    from tiny_models import build_tiny_model

    from model.cache.kv_cache import KVCache, LayerCache

    calls = {"allocate": 0, "slide": 0}
    for name in calls:
        real = getattr(LayerCache, name)

        def counted(self, *args, real=real, name=name):
            calls[name] += 1
            return real(self, *args)

        monkeypatch.setattr(LayerCache, name, counted)
    model = build_tiny_model("llama3")
    cache = KVCache(model.config, 64, model.rope.shift, keep=4)
    evictions = 0
    for step in range(300):
        before = cache.evicted_total
        mx.eval(model(mx.array([[step % 96]]), cache))
        evictions += cache.evicted_total > before
    layers = model.config.num_hidden_layers
    assert evictions >= 15 and cache.evicted_total == evictions * 15  # blocks of a quarter of the window
    assert calls == {"allocate": layers, "slide": evictions * layers}
