"""Windowed layers keep only their window, every layer shifts by its own RoPE, and what is kept stays exact.

A gemma3_text model whose window (8 tokens) is smaller than the prompt: every cached
step must equal mlx-lm with its rotating caches, and a from-scratch recomputation (mlx-lm,
no cache, its own window mask) over the whole conversation, all of which the global
layers still hold. With a small capacity the global layers evict too. A from-scratch run
is no reference then (the survivors' keys in deeper layers were computed while the
evicted tokens were still there), so each layer is checked on its own: every key it
holds equals the key it was given, turned in numpy to its new position with that layer's
RoPE as the checkpoint's config defines it (Gemma 3's windowed layers have their own
base, SmolLM3's fourth layers none, Phi-3 turns 3/4 of each head), and its next
attention equals softmax(q k^T) v over exactly what it holds, recomputed in numpy.

The window, eviction, rollback and next-step tests run on both code paths (tests/code_paths.py)
with the same bounds: float32 on each; the gpu path turns evicted keys with `fast.rope` where
the cpu path reads its float64 table (both within 1e-5 of numpy's rotation here), and its
prefill blocks go through MLX's fused attention with the same masks.
"""

import json

import mlx.core as mx
import numpy as np
import pytest
from cli_helpers import glasschat
from family_models import write_folder
from mlx_lm.utils import load_model as mlx_lm_load_model
from test_families import TOLERANCE, assert_same_run, our_run, prompt_ids, reference_run

from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings
from model.loading.loader import load_model
from model.network.attention import plain
from model.network.probe import Probe
from model.runtime.cache_service import CacheService
from model.runtime.generate import prefill

WINDOW = 8


def load_pair(folder, family, **overrides):
    write_folder(folder, family, **overrides)
    return load_model(str(folder), layout="float32"), mlx_lm_load_model(folder)[0]


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    return load_pair(tmp_path_factory.mktemp("gemma3") / "m", "gemma3_text", sliding_window=WINDOW)


def from_scratch(reference, ids: list[int]) -> mx.array:
    """Next-token logits recomputed over `ids` at positions 0..n-1, with no cache."""
    return reference(mx.array([ids]))[0, -1]


def test_window_smaller_than_the_prompt(code_path, gemma3):
    loaded, reference = gemma3
    assert loaded.config.sliding_layers == (0, 1, 2, 3, 4)
    prompt = prompt_ids(loaded)
    assert len(prompt) > 3 * WINDOW
    cache = make_cache(loaded.model, CacheSettings(max_kv_size=256))
    cache.window_slack = 16  # windowed layers drop what no query sees every 16 tokens (256 by default)
    ours, tokens = our_run(loaded, prompt, cache=cache)
    assert all(cache.layers[i].dropped > 0 for i in loaded.config.sliding_layers)
    assert cache.state().bytes_windowed == 5 * 2 * loaded.config.kv_dim * 4 * (cache.keep + WINDOW + 16)
    assert_same_run(ours, tokens, reference_run(reference, prompt, tokens))
    for i, logits in enumerate(ours):
        assert mx.abs(logits - from_scratch(reference, prompt + tokens[:i])).max().item() < TOLERANCE


def test_windowed_layers_are_bounded_by_the_window_not_the_capacity(tmp_path):
    loaded, _ = load_pair(tmp_path / "m", "gemma3_text", sliding_window=WINDOW, max_position_embeddings=4096)
    states = {}
    for capacity in (1024, 4096):
        cache = make_cache(loaded.model, CacheSettings(max_kv_size=capacity))
        prefill(loaded.model, cache, [i % 300 for i in range(1500)])
        states[capacity] = cache.state()
    small, large = states[1024], states[4096]
    assert small.window == large.window == WINDOW
    assert small.windowed_layers == large.windowed_layers == 5
    assert small.bytes == small.bytes_global + small.bytes_windowed
    assert small.bytes_windowed == large.bytes_windowed  # the window decides, not the capacity
    assert large.bytes_global > small.bytes_global
    slot = 2 * loaded.config.kv_dim * 4  # K and V of one token in one layer, float32
    # A windowed layer holds the sink, its window, the longest prefill chunk and one allocation step.
    assert small.bytes_windowed <= 5 * slot * (cache.keep + WINDOW + 2 * 256)


# --- eviction: each layer's keys turned by its own RoPE -----------------------------------------


def layer_rotation(config: dict, layer: int):
    """(periods, rotated features) of a layer's RoPE, from the family's config.json; None if it has none.

    Read from the checkpoint's own config, not from our ModelConfig: Gemma 3's windowed layers
    use rope_local_base_freq, SmolLM3 skips every fourth layer, Phi-3 turns 3/4 of each head
    with its longrope factors."""
    kind = config["model_type"]
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    base = config["rope_theta"]
    if kind == "smollm3" and (layer + 1) % config["no_rope_layer_interval"] == 0:
        return None
    if kind == "gemma3_text" and (layer + 1) % config["sliding_window_pattern"] != 0:
        base = config["rope_local_base_freq"]
    rotary = int(dim * config.get("partial_rotary_factor", 1.0))
    periods = base ** (np.arange(0, rotary, 2, dtype=np.float64) / rotary)
    if kind == "phi3":
        periods = periods * np.array(config["rope_scaling"]["long_factor"])
    return periods, rotary


def turn(x: np.ndarray, delta: int, rotation) -> np.ndarray:
    """x (..., head_dim) moved by `delta` positions: pairs (i, i + rotary/2) of the first `rotary` features."""
    if rotation is None:
        return x
    periods, rotary = rotation
    cos, sin = np.cos(delta / periods), np.sin(delta / periods)
    a, b = x[..., : rotary // 2], x[..., rotary // 2 : rotary]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos, x[..., rotary:]], axis=-1)


def drive_with_evictions(loaded, kv_bits=None, capacity=64, keep=4):
    """Turns of prefill chunks and decode steps through a small cache, recording each layer's new keys."""
    cache = make_cache(loaded.model, CacheSettings(max_kv_size=capacity, keep=keep, kv_bits=kv_bits))
    cache.keep = keep
    cache.window_slack = 12  # windowed layers drop on their own too, between the global evictions
    n_layers = loaded.config.num_hidden_layers
    rng = np.random.default_rng(0)
    seen = {"keys": [[] for _ in range(n_layers)], "values": [[] for _ in range(n_layers)], "position": []}
    windowed = [cache.layers[i] for i in loaded.config.sliding_layers if loaded.config.sliding_window]
    dropped = 0
    for size in [20, 1, 1, 13, 1, 1, 30, 1, 1, 1, 7, 1, 25, 1, 1, 1, 1, 9, 1, 1] * 2:
        ids = rng.integers(0, loaded.config.vocab_size, size).tolist()
        for start in range(0, size, 8):
            chunk = ids[start : start + 8]
            probe = Probe(attention_layers=range(n_layers))
            loaded.model(mx.array([chunk]), cache, probe=probe)
            seen["position"] += list(range(cache.length - len(chunk), cache.length))
            dropped = max([dropped] + [layer.dropped for layer in windowed])
            for i, s in probe.attention.items():
                seen["keys"][i].append(np.array(plain(s.keys)[0, :, -len(chunk) :].astype(mx.float32)))
                seen["values"][i].append(np.array(plain(s.values)[0, :, -len(chunk) :].astype(mx.float32)))
    assert cache.evicted_total > capacity  # the global layers evicted more than a whole cache
    if windowed and loaded.config.sliding_window < capacity:
        assert dropped > 0  # the windowed layers also dropped on their own, between evictions
    keys = [np.concatenate(k, axis=1) for k in seen["keys"]]  # per layer (nkv, tokens fed, hd)
    values = [np.concatenate(v, axis=1) for v in seen["values"]]
    return cache, keys, values, seen["position"]


def held_tokens(cache, layer) -> list[int]:
    """Which tokens fed (by index) a layer holds, slot by slot: the sink, then the survivors it kept."""
    keep, gone = cache.keep, cache.evicted_total
    after_sink = range(keep + cache.layers[layer].dropped, cache.length)
    return list(range(keep)) + [p + gone for p in after_sink]


@pytest.mark.parametrize("family", ["gemma3_text", "gemma2", "smollm3", "phi3", "qwen3", "olmo2"])
def test_eviction_turns_each_layer_by_its_own_rope(code_path, tmp_path, family):
    overrides = {"sliding_window": WINDOW} if family == "gemma3_text" else {}
    config = write_folder(tmp_path / family, family, **overrides)
    loaded = load_model(str(tmp_path / family), layout="float32")
    cache, keys, values, fed_at = drive_with_evictions(loaded)
    for layer in range(loaded.config.num_hidden_layers):
        tokens = held_tokens(cache, layer)
        stored_k, stored_v = (np.array(x[0].astype(mx.float32)) for x in cache.layers[layer].stored(cache.length))
        assert stored_k.shape[1] == len(tokens)
        new_positions = [t if t < cache.keep else t - cache.evicted_total for t in tokens]
        rotation = layer_rotation(config, layer)
        for slot, (t, p) in enumerate(zip(tokens, new_positions)):
            expected = turn(keys[layer][:, t].astype(np.float64), p - fed_at[t], rotation)
            np.testing.assert_allclose(stored_k[:, slot], expected, atol=1e-4, err_msg=f"layer {layer} token {t}")
        np.testing.assert_array_equal(stored_v, values[layer][:, tokens])


def test_eviction_with_a_quantized_cache(code_path, tmp_path):
    config = write_folder(tmp_path / "m", "gemma3_text", sliding_window=WINDOW)
    loaded = load_model(str(tmp_path / "m"), layout="float32")
    cache, keys, _, fed_at = drive_with_evictions(loaded, kv_bits=8)
    for layer in range(loaded.config.num_hidden_layers):
        tokens = held_tokens(cache, layer)
        stored_k, _ = (np.array(x[0].astype(mx.float32)) for x in cache.layers[layer].stored(cache.length))
        rotation = layer_rotation(config, layer)
        positions = [t if t < cache.keep else t - cache.evicted_total for t in tokens]
        expected = np.stack([turn(keys[layer][:, t], p - fed_at[t], rotation) for t, p in zip(tokens, positions)], 1)
        # 8-bit rounding, redone each time a key is turned: about 1% of its norm (as in test_rotating_cache).
        assert np.linalg.norm(stored_k - expected) / np.linalg.norm(expected) < 0.02


def test_next_step_attends_over_exactly_what_each_layer_holds(code_path, tmp_path):
    """After evictions, one more step: a global layer attends over all it holds, a windowed layer over its
    last WINDOW tokens, each as softmax(q k^T * scale) v recomputed here in numpy."""
    write_folder(tmp_path / "m", "gemma3_text", sliding_window=WINDOW)
    loaded = load_model(str(tmp_path / "m"), layout="float32")
    cache, *_ = drive_with_evictions(loaded)
    held = [cache.layers[i].stored(cache.length) for i in range(loaded.config.num_hidden_layers)]
    probe = Probe(attention_layers=range(loaded.config.num_hidden_layers))
    loaded.model(mx.array([[7]]), cache, probe=probe)
    for i, seen in probe.attention.items():
        k, v = (np.array(x[0]) for x in held[i])
        new_k, new_v = (np.array(x[0, :, -1:]) for x in (seen.keys, seen.values))
        k, v = np.concatenate([k, new_k], axis=1), np.concatenate([v, new_v], axis=1)
        if i in loaded.config.sliding_layers:
            k, v = k[:, -WINDOW:], v[:, -WINDOW:]
        else:
            assert k.shape[1] == cache.length
        q = np.array(seen.q[0, :, -1]).astype(np.float64)  # (nh, hd)
        kv_of_head = np.repeat(np.arange(k.shape[0]), q.shape[0] // k.shape[0])
        scores = np.einsum("hd,hsd->hs", q, k[kv_of_head]) * seen.scale
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        expected = np.einsum("hs,hsd->hd", weights, v[kv_of_head])
        np.testing.assert_allclose(np.array(seen.out[0, :, -1]), expected, atol=1e-5)


def test_rollback_of_a_speculative_step_in_windowed_layers(code_path, gemma3):
    loaded, reference = gemma3
    cache = make_cache(loaded.model, CacheSettings(max_kv_size=128))
    cache.window_slack = 4
    prompt = prompt_ids(loaded)
    prefill(loaded.model, cache, prompt, chunk_size=4)
    for _ in range(5):  # each step makes the windowed layers drop again
        loaded.model(mx.array([[5]]), cache)  # fed ahead, never shown
        cache.rollback(1)
        assert cache.layers[0].dropped > 0
        logits = loaded.model(mx.array([[7]]), cache)[0, -1]
        prompt = prompt + [7]
        assert mx.abs(logits - from_scratch(reference, prompt)).max().item() < TOLERANCE
    with pytest.raises(ValueError, match="cannot roll back"):
        cache.rollback(WINDOW)  # the windowed layers no longer hold what the query before would need


def test_replay_json_reports_global_and_windowed_bytes(tmp_path):
    write_folder(tmp_path / "m", "gemma3_text", sliding_window=WINDOW)
    script = tmp_path / "chat.json"
    script.write_text(json.dumps(["Hello! How are you today?", "Count to five."]))
    proc = glasschat("replay", str(script), "--json", "--model", str(tmp_path / "m"), "--max-tokens", "12")
    assert proc.returncode == 0, proc.stderr
    turns = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(turns) == 2
    for turn in turns:
        cache = turn["cache"]
        assert cache["window"] == WINDOW and cache["windowed_layers"] == 5
        assert cache["bytes_global"] > 0 and cache["bytes_windowed"] > 0
        assert cache["bytes"] == cache["bytes_global"] + cache["bytes_windowed"]


def test_a_branch_further_back_than_the_window_holds_is_read_again(code_path, gemma3):
    """Moving the conversation to another branch rolls the cache back when every layer still holds what
    the next query needs, and reads the branch again from the sink when a windowed layer dropped it."""
    loaded, reference = gemma3
    service = CacheService(loaded, CacheSettings(max_kv_size=256), prefill_chunk=8)
    service.cache.window_slack = 8
    rng = np.random.default_rng(1)
    history = rng.integers(0, loaded.config.vocab_size, 60).tolist()
    service.hold(history, sink=4)
    for back, rebuilt in ((3, False), (40, True)):
        target = service.history[: len(service.history) - back] + [11, 12, 13]
        move = service.move(target, sink=4)
        assert move.rebuilt is rebuilt
        assert move.reused + len(move.to_feed) == len(target)
        logits = service.prefill(move.to_feed)
        assert mx.abs(logits - from_scratch(reference, target)).max().item() < TOLERANCE
