"""The probe sees the model's true attention, without patching anything, and changes nothing.

References are recomputed outside the model: each layer's query and key from
the layer's input (the previous block's output, which the probe also records),
then softmax(q k^T * scale) v in numpy over the keys the cache holds.
"""

import mlx.core as mx
import numpy as np
import pytest
from tiny_models import BASE_CONFIG, VARIANTS, build_tiny_model, random_weights

from model.cache.kv_cache import KVCache
from model.cache.kv_quantized import QuantizedKVCache
from model.loading.config import config_from_hf
from model.loading.fusion import fuse_weights
from model.loading.weights import apply_weights
from model.network.probe import Probe
from model.network.transformer import FusedAttention, FusedMLP, Transformer
from model.runtime.generate import prefill

PROMPT = [(7 * i + 3) % 96 for i in range(21)]


def numpy_attention(q, keys, values, scale):
    """(weights of the last query (nh, S), outputs (nh, L, hd)) for q (nh, L, hd), keys/values (nkv, S, hd)."""
    repeats = q.shape[0] // keys.shape[0]
    keys, values = np.repeat(keys, repeats, axis=0), np.repeat(values, repeats, axis=0)
    scores = q @ keys.swapaxes(-1, -2) * scale
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return weights[:, -1, :], weights @ values


def step_with_probe(cache_class, **kw):
    model = build_tiny_model("llama3", hidden_size=128)  # head_dim 32: a quantization group
    cache = cache_class(model.config, capacity=64, shift_keys=model.rope.shift, **kw)
    prefill(model, cache, PROMPT[:-1], chunk_size=8)
    layers_before = [dict(vars(layer)) for layer in cache.layers]
    position = cache.length
    probe = Probe(attention_layers=range(model.config.num_hidden_layers), hidden=True)
    logits = model(mx.array([PROMPT[-1:]]), cache, probe=probe)
    # Nothing was attached to the cache to see inside it.
    assert [set(vars(layer)) for layer in cache.layers] == [set(v) for v in layers_before]
    return model, cache, probe, position, logits


@pytest.mark.parametrize("cache_class, kw, tolerance", [(KVCache, {}, 1e-5), (QuantizedKVCache, {"bits": 8}, 1e-4)])
def test_probe_attention_equals_a_numpy_recomputation(cache_class, kw, tolerance):
    model, cache, probe, position, _ = step_with_probe(cache_class, **kw)
    assert sorted(probe.attention) == list(range(model.config.num_hidden_layers))
    assert len(probe.hidden_states) == model.config.num_hidden_layers
    for i, block in enumerate(model.model.layers):
        seen = probe.attention[i]
        # This layer's input: the embedding, or the block below's output as the probe recorded it.
        x = model.model.embed_tokens(mx.array([PROMPT[-1:]])) if i == 0 else probe.hidden_states[i - 1]
        attn = block.self_attn
        q, k, _ = attn.project(block.input_layernorm(x))
        q = model.rope(q.reshape(1, 1, attn.n_heads, -1).transpose(0, 2, 1, 3), position)
        k = model.rope(k.reshape(1, 1, attn.n_kv_heads, -1).transpose(0, 2, 1, 3), position)
        keys, values = (np.array(a[0]) for a in cache.layers[i].stored(cache.length))
        assert keys.shape[1] == position + 1
        # The cache's newest key is this step's key (to quantization error).
        np.testing.assert_allclose(keys[:, -1], np.array(k[0, :, 0]), atol=0.05 if kw else 1e-6)
        weights, out = numpy_attention(np.array(q[0]), keys, values, attn.scale)
        np.testing.assert_allclose(np.array(seen.q[0]), np.array(q[0]), atol=1e-6)
        np.testing.assert_allclose(np.array(seen.weights()), weights, atol=tolerance)
        np.testing.assert_allclose(np.array(seen.out[0]), out, atol=tolerance)
        np.testing.assert_allclose(np.array(seen.weights()).sum(-1), 1.0, atol=1e-5)


def test_probe_changes_nothing():
    model, _, probe, _, watched = step_with_probe(KVCache)
    plain_cache = KVCache(model.config, capacity=64, shift_keys=model.rope.shift)
    prefill(model, plain_cache, PROMPT[:-1], chunk_size=8)
    h = model.hidden_states(mx.array([PROMPT[-1:]]), plain_cache)
    assert mx.array_equal(model.head(h), watched).item()
    assert mx.array_equal(probe.hidden_states[-1], h).item()


def tiny_weights(quantized: bool):
    config = {**BASE_CONFIG, **VARIANTS["qwen2"], "hidden_size": 128}  # q/k/v biases too
    weights = random_weights(config)
    if quantized:
        for name in [n for n in weights if n.endswith("_proj.weight")]:
            packed, scales, biases = mx.quantize(weights[name], group_size=64, bits=4)
            stem = name[: -len(".weight")]
            weights.update({name: packed, f"{stem}.scales": scales, f"{stem}.biases": biases})
    return config_from_hf(config), weights


@pytest.mark.parametrize("layout", ["float32", "quantized"])
def test_fused_model_gives_the_unfused_models_logits(layout):
    config, weights = tiny_weights(quantized=layout == "quantized")
    fused_weights = fuse_weights(weights, config.num_hidden_layers)
    assert fused_weights is not None
    plain, fused = Transformer(config), Transformer(config, fused=True)
    apply_weights(plain, dict(weights), 64, layout)
    apply_weights(fused, fused_weights, 64, layout)
    assert isinstance(fused.model.layers[0].self_attn, FusedAttention)
    assert isinstance(fused.model.layers[0].mlp, FusedMLP)
    tokens = mx.array([PROMPT])
    assert mx.abs(fused(tokens) - plain(tokens)).max().item() < 1e-4


def test_layers_stored_differently_stay_unfused():
    config, weights = tiny_weights(quantized=True)
    # As in a GGUF that keeps v at a higher precision than q and k.
    stem = "model.layers.1.self_attn.v_proj"
    weights[f"{stem}.weight"] = mx.dequantize(
        weights.pop(f"{stem}.weight"), weights.pop(f"{stem}.scales"), weights.pop(f"{stem}.biases"), 64, 4
    )
    assert fuse_weights(weights, config.num_hidden_layers) is None
