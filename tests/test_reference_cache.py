"""The wrapped KV cache against an independent float64 reference, in every layer.

README ("The KV cache"): after any number of evictions, attention over the kept
tokens equals attention computed from scratch over them, and `--kv-bits 8|4`
"rotates like the float cache". `numpy_reference` computes the model in numpy
float64 from the checkpoint's own tensors, with a cache that keeps keys unrotated
and rotates them at use to their index among the kept tokens; here our cache is
driven through several wraps (prefill chunks, single decode steps, and the
rollback of a token fed ahead) and must hold, layer by layer, what it says.
The tiny model's tests run on both code paths (tests/code_paths.py) with the same bounds:
float32 throughout on each, and the gpu path's fused attention, `fast.rope` at decode and
its RoPE shift of evicted keys are float32 operations as exact as the cpu path's (measured
on the gpu path: the same 5e-6 in the deepest layer).
"""

import mlx.core as mx
import numpy as np
import pytest
from numpy_reference import Kept, Reference, read_gguf, rope, softmax, spec_from_hf
from tiny_models import BASE_CONFIG, VARIANTS, build_tiny_model, random_weights

from model.cache.kv_cache import KVCache
from model.cache.kv_quantized import QuantizedKVCache
from model.network.probe import Probe

# Six layers, so that a fault in a deep layer (say layer 5) has somewhere to hide;
# head_dim 32 is one quantization group.
TINY = {"hidden_size": 128, "num_hidden_layers": 6}
CAPACITY, KEEP = 48, 5
# Chunk sizes of forward passes through the cache; "r" rolls back the token just
# fed, as decode does when the user stops after a token it had fed ahead.
OPS = [16, 4, 1, 1, "r", 13, 1, 16, 14, 1, "r", 1, 1, 7, 16, 16, 8, 1, 1, "r", 1, 1, 16, 9, 1, 1, 16, 16, 3, 1, 1]


def relative(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def probed(model, cache, tokens: list[int], hidden: bool = False):
    """One forward pass with a probe in every layer: the last hidden state, per layer the calls
    [(start position, q, k, v, attention output)], and each block's output if `hidden`."""
    probe = Probe(attention_layers=range(len(cache.layers)), hidden=hidden)
    h = model.hidden_states(mx.array([tokens]), cache, probe)
    start = cache.length - len(tokens)  # where this pass's tokens went, after any eviction it made
    calls = [[(start, seen.q, seen.k, seen.v, seen.out)] for _, seen in sorted(probe.attention.items())]
    return h, calls, probe.hidden_states


def held(cache, layer: int):
    """What our cache holds for a layer, in float64: keys and values (kv_heads, length, head_dim)."""
    k, v = cache.layers[layer].stored(cache.length)
    return np.array(k[0].astype(mx.float32), np.float64), np.array(v[0].astype(mx.float32), np.float64)


def tiny():
    config = {**BASE_CONFIG, **VARIANTS["llama3"], **TINY}
    weights = {name: np.array(value) for name, value in random_weights(config).items()}
    return build_tiny_model("llama3", **TINY), weights, spec_from_hf(config)


def drive(model, cache, ops, ids, on_pass, on_rollback):
    """Run forward passes of the given sizes over `ids`, telling the reference each pass and rollback."""
    at = 0
    for op in ops:
        if op == "r":
            cache.rollback(1)
            on_rollback(1)
            continue
        chunk = ids[at : at + op]
        at += op
        reported = cache.state().position  # "the RoPE position the next token gets"
        h, calls, _ = probed(model, cache, chunk)
        mx.eval(h)
        if op == 1:
            # Each kept token's key is checked to be rotated to its index, so this is where it went.
            assert reported == cache.length - 1, (reported, cache.length - 1)
        on_pass(chunk, calls)


def test_float_cache_equals_the_reference_in_every_layer_after_wraps(code_path):
    model, weights, spec = tiny()
    cache = KVCache(model.config, CAPACITY, model.rope.shift, keep=KEEP)
    ref = Reference(weights, spec, CAPACITY, KEEP)
    ids = np.random.default_rng(0).integers(0, 96, 400).tolist()

    drive(model, cache, OPS, ids, lambda chunk, _: ref.feed(chunk), ref.rollback)
    assert cache.evicted_total == ref.evicted_total > 2 * CAPACITY  # wrapped several times
    assert cache.length == ref.length
    ref.flush()
    # Measured: 5e-6 in the deepest layer (float32 against float64). A key rotated to
    # the wrong position or a value slid by one is off by order 1.
    for layer in range(spec.layers):
        keys, values = held(cache, layer)
        assert relative(keys, ref.kept.keys(layer)) < 1e-4, f"layer {layer} keys"
        assert relative(values, ref.kept.values[layer]) < 1e-4, f"layer {layer} values"

    # The next decode step: every layer's attention output and residual stream, and the logits.
    token = 7
    h, calls, residuals = probed(model, cache, [token], hidden=True)
    logits = model.head(h)[0, -1]
    mx.eval(logits, residuals, [c[-1][4] for c in calls])
    fed = ref.step([token])
    for layer in range(spec.layers):
        out = np.array(calls[layer][-1][4][0, :, -1, :])  # (heads, head_dim)
        assert relative(out, fed.attention[layer][:, -1, :]) < 1e-4, f"layer {layer} attention"
        assert relative(np.array(residuals[layer][0, -1]), fed.hidden[layer][-1]) < 1e-4, f"layer {layer} residual"
    assert np.abs(np.array(logits) - ref.head(fed.final)).max() < 1e-3


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_cache_holds_what_each_layer_was_given_after_wraps(bits, code_path):
    """Every layer holds each kept token's key and value, at its kept index, within the quantization error.

    The error, stated: `mx.quantize` stores a group of 32 as q * s + b with q in
    0 .. 2^bits - 1, choosing s so that zero is exact; the grid can then stop short
    of the group's far end by under one step, so each element is within one step
    |s| of its value. Values are quantized once and slid as stored bits: that bound
    holds for them element by element, with the cache's own scales. A key is
    quantized once when written and again at each eviction that slides it (it is
    dequantized, rotated, and quantized again), each time with a rounding error
    spread evenly over +-|s|/2, so its expected mean square error is
    (evictions survived + 1) * mean(s^2) / 12, with the cache's current scales
    standing in for earlier ones (rotation moves a group's range a little between
    roundings). Over a layer the error must stay under 1.5x that expectation
    (measured 0.75-1.02x), and for each token under 3x (only 64 roundings per
    token: measured up to 1.7x). A key rotated to the wrong position, or a value
    slid by one, is off by the size of the key or value itself: 10 to 3,000 times
    these bounds.
    """
    model, weights, spec = tiny()
    cache = QuantizedKVCache(model.config, CAPACITY, model.rope.shift, bits=bits, keep=KEEP)
    kept = Kept(spec, CAPACITY, KEEP)
    ids = np.random.default_rng(1).integers(0, 96, 400).tolist()

    def on_pass(chunk, calls):
        kept.evict_for(len(chunk))
        positions = kept.add_tokens(chunk)
        for layer, layer_calls in enumerate(calls):
            start, _, k, v, _ = layer_calls[-1]
            assert start == positions[0]  # the cache placed the tokens where the README says
            raw = rope(np.array(k[0], np.float64), -positions, spec)  # undo RoPE at the write position
            kept.add(layer, raw, np.array(v[0], np.float64))

    drive(model, cache, OPS, ids, on_pass, kept.rollback)
    assert cache.evicted_total == kept.evicted_total > 2 * CAPACITY
    assert cache.length == kept.length
    assert kept.moves.max() >= 3  # some keys were re-quantized several times
    # Layer 0's keys and values depend only on token and weights: what it was given
    # is what the float64 reference computes from scratch for the kept tokens.
    scratch = Reference(weights, spec, capacity=kept.length, keep=0)
    scratch.step(kept.tokens)
    assert relative(kept.raw_keys[0], scratch.kept.raw_keys[0]) < 1e-5
    assert relative(kept.values[0], scratch.kept.values[0]) < 1e-5
    for layer in range(spec.layers):
        keys, values = held(cache, layer)
        _, key_scales, _ = (np.array(x[0, :, : cache.length].astype(mx.float32)) for x in cache.layers[layer].keys)
        _, value_scales, _ = (np.array(x[0, :, : cache.length].astype(mx.float32)) for x in cache.layers[layer].values)
        step = np.repeat(np.abs(value_scales), cache.group_size, axis=-1)  # per element
        value_ratio = (np.abs(values - kept.values[layer]) / (step * (1 + 1e-4) + 1e-6)).max()
        assert value_ratio <= 1, f"layer {layer} values: off by {value_ratio:.3g} steps"
        key_mse = ((keys - kept.keys(layer)) ** 2).mean(axis=(0, 2))  # per token
        expected = (kept.moves + 1) * (key_scales**2).mean(axis=(0, 2)) / 12
        layer_ratio, token_ratio = key_mse.sum() / expected.sum(), (key_mse / expected).max()
        assert layer_ratio < 1.5 and token_ratio < 3, f"layer {layer} keys: {layer_ratio:.3g}, {token_ratio:.3g}"

    # The next step's attention in every layer is softmax(q k^T / sqrt(d)) v over what is held.
    h, calls, _ = probed(model, cache, [7])
    mx.eval(h)
    for layer in range(spec.layers):
        _, q, _, _, out = calls[layer][-1]
        keys, values = held(cache, layer)
        repeats = spec.heads // spec.kv_heads
        scores = np.einsum("hd,hsd->hs", np.array(q[0, :, -1, :], np.float64), np.repeat(keys, repeats, axis=0))
        weights = softmax(scores / np.sqrt(spec.head_dim))  # (heads, S)
        expected = np.einsum("hs,hsd->hd", weights, np.repeat(values, repeats, axis=0))
        assert np.abs(np.array(out[0, :, -1, :]) - expected).max() < 1e-4, f"layer {layer} attention"


@pytest.fixture(scope="module")
def gguf_reference(default_gguf_path):
    return read_gguf(default_gguf_path)


def test_default_model_cache_equals_the_reference_in_every_layer(default_model, gguf_reference):
    """The real model (30 layers, grouped-query heads, interleaved RoPE) through four evictions.

    Few passes, since each eviction costs the float64 reference a pass over all
    of the model's weights; the tiny model above takes the cache round many times."""
    weights, spec = gguf_reference
    model = default_model.model
    capacity, keep = 64, 4
    cache = KVCache(model.config, capacity, model.rope.shift, keep=keep)
    ref = Reference(weights, spec, capacity, keep)
    ids = default_model.tokenizer.encode_text("The lighthouse keeper climbed the stairs to light the lamp. " * 16)
    # Fills to 60, rolls back, then evicts 15 tokens at the 16-token passes and at a decode step.
    ops = [16, 16, 16, 8, 1, 1, 1, 1, "r", 1, 16, 1, 1, 1, 1, "r", 16, 1, 16]

    drive(model, cache, ops, ids, lambda chunk, _: ref.feed(chunk), ref.rollback)
    assert cache.evicted_total == ref.evicted_total == 60
    ref.flush()
    worst = 0.0
    for layer in range(spec.layers):
        keys, values = held(cache, layer)
        worst = max(worst, relative(keys, ref.kept.keys(layer)), relative(values, ref.kept.values[layer]))
    assert worst < 1e-4, worst  # measured 3e-6

    h, calls, _ = probed(model, cache, [ids[-1]])
    logits = model.head(h)[0, -1]
    mx.eval(logits, [c[-1][4] for c in calls])
    fed = ref.step([ids[-1]])
    for layer in range(spec.layers):
        out = np.array(calls[layer][-1][4][0, :, -1, :])
        assert relative(out, fed.attention[layer][:, -1, :]) < 1e-4, f"layer {layer} attention"
    expected = ref.head(fed.final)
    assert np.abs(np.array(logits) - expected).max() < 1e-2 * np.abs(expected).max()
    assert int(np.argmax(np.array(logits))) == int(np.argmax(expected))
