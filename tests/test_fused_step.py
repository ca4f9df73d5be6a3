"""The fused small ops of a decode step (model/kernels/fused_op.cpp, model.kernels.fused_step).

Each must give what the ops it replaces give: the RMSNorm MLX's own to the bit; the
split into heads with RoPE what the model's reshape, transpose and table rotation give;
the matvec with the MLP's gate and the residual add what the kernel's plain product
and MLX's ops give. The model must build far fewer graph nodes a step with them, and
decode the same tokens.
"""

from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest
from tiny_models import BASE_CONFIG, VARIANTS, random_weights

from bench.step_profile import graph_nodes, profile_decode_step
from model.cache.kv_cache import KVCache
from model.kernels import device, fused_step, qmv
from model.loading.config import config_from_hf
from model.loading.fusion import fuse_weights
from model.loading.weights import apply_weights
from model.network import fast_math
from model.network.config import ModelConfig
from model.network.rope import RoPE
from model.network.transformer import Transformer

try:  # the module itself: a kernel that fails to load must fail here, not skip
    from model.kernels import _qmv as ext
except ImportError:
    ext = None
pytestmark = pytest.mark.skipif(
    ext is None or ext.built_for_mlx != mx.__version__ or not hasattr(ext, "rms_norm"),
    reason="the kernel extension is not built for this mlx",
)


def test_rms_norm_is_mlxs_to_the_bit():
    x = mx.random.normal((5, 3, 576), key=mx.random.key(1)) * 3
    w = mx.random.normal((576,), key=mx.random.key(2))
    for rows in (x, x[:, 1], x.transpose(1, 0, 2)):  # strided views too
        assert mx.array_equal(ext.rms_norm(rows, w, 1e-5), mx.fast.rms_norm(rows, w, 1e-5))


def rotated(x: np.ndarray, positions: np.ndarray, rot: int, traditional: bool, base: float = 10000.0) -> np.ndarray:
    """RoPE in float64 numpy: x (rows, heads, D) at `positions` (rows,), the first `rot` features turned."""
    angles = positions[:, None, None] / base ** (np.arange(0, rot, 2) / rot)  # (rows, 1, rot/2)
    c, s = np.cos(angles), np.sin(angles)
    out = x.copy()
    if traditional:
        even, odd = x[..., 0:rot:2], x[..., 1:rot:2]
        out[..., 0:rot:2], out[..., 1:rot:2] = even * c - odd * s, even * s + odd * c
    else:
        first, second = x[..., : rot // 2], x[..., rot // 2 : rot]
        out[..., : rot // 2], out[..., rot // 2 : rot] = first * c - second * s, first * s + second * c
    return out


@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("rows", [1, 3])
def test_rope_heads_give_the_models_heads(traditional, rows):
    """q, k and v split from the fused projection, q and k turned at positions offset.. (float64 numpy)."""
    config = ModelConfig("llama", 64, 1, 9, 3, 64, 128, 10, rope_theta=10000.0, rope_traditional=traditional)
    rope = RoPE(config)
    n_heads, n_kv, D = 9, 3, 64
    qkv = mx.random.normal((1, rows, (n_heads + 2 * n_kv) * D), key=mx.random.key(rows))
    x = np.array(qkv[0], dtype=np.float64)  # (rows, heads * D)
    for offset in (0, 37, 3000):
        q, k, v = ext.rope_heads(qkv, *rope.tables(offset + rows), offset, n_heads, n_kv, D, D, traditional)
        positions = np.arange(offset, offset + rows, dtype=np.float64)
        heads = x.reshape(rows, n_heads + 2 * n_kv, D)
        want_q = rotated(heads[:, :n_heads], positions, D, traditional)
        want_k = rotated(heads[:, n_heads : n_heads + n_kv], positions, D, traditional)
        want_v = heads[:, n_heads + n_kv :]
        for got, want in ((q, want_q), (k, want_k), (v, want_v)):
            assert got.shape == (1, want.shape[1], rows, D)
            error = np.abs(np.array(got[0]).transpose(1, 0, 2) - want).max()
            assert error < 1e-5, (offset, traditional, error)


def test_partial_rotation_passes_the_tail_through():
    rope_dims, D = 32, 64
    qkv = mx.random.normal((1, 1, 3 * D), key=mx.random.key(9))
    positions = np.arange(10, dtype=np.float64)[:, None] / 10000.0 ** (np.arange(0, rope_dims, 2) / rope_dims)
    cos, sin = mx.array(np.cos(positions), dtype=mx.float32), mx.array(np.sin(positions), dtype=mx.float32)
    q, k, v = ext.rope_heads(qkv, cos, sin, 5, 1, 1, D, rope_dims, False)
    x = np.array(qkv[0, 0, :D], dtype=np.float64)
    half = rope_dims // 2
    c, s = np.cos(positions[5]), np.sin(positions[5])
    want = np.concatenate([x[:half] * c - x[half:rope_dims] * s, x[:half] * s + x[half:rope_dims] * c, x[rope_dims:]])
    assert np.abs(np.array(q[0, 0, 0]) - want).max() < 1e-5


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [1, 2, 8])
def test_matvec_with_gate_and_residual(bits, rows):
    """down(silu(gate) * up) + residual in one node equals the kernel's product of MLX's gate, plus the residual."""
    W = mx.random.normal((200, 384), key=mx.random.key(bits)) * 0.05
    w, scales, biases = mx.quantize(W, group_size=32, bits=bits)
    gate_up = mx.random.normal((1, rows, 768), key=mx.random.key(rows)) * 3
    residual = mx.random.normal((1, rows, 200), key=mx.random.key(7))
    gate, up = mx.split(gate_up, 2, axis=-1)
    plain = ext.quantized_matvec(fast_math.swiglu(gate, up), w, scales, biases, 32, bits)
    fused = ext.quantized_matvec(gate_up, w, scales, biases, 32, bits, residual, True)
    # The gate's exp is the same polynomial in C++ as in fast_math; the rest is the same kernel.
    assert mx.abs(fused - (plain + residual)).max().item() < 1e-5
    assert mx.array_equal(
        ext.quantized_matvec(fast_math.swiglu(gate, up), w, scales, biases, 32, bits, residual), plain + residual
    )


def tiny_quantized(config: dict) -> Transformer:
    weights = random_weights(config)
    for name in [n for n in weights if n.endswith("proj.weight")]:
        stem = name[: -len(".weight")]
        weights[name], weights[f"{stem}.scales"], weights[f"{stem}.biases"] = mx.quantize(
            weights[name], group_size=32, bits=4
        )
    model = Transformer(config_from_hf(config), fused=True)
    apply_weights(model, fuse_weights(weights, config["num_hidden_layers"]), 32, "quantized")
    return model


def decode_run(model, ids, steps, monkeypatch, fused: bool):
    with monkeypatch.context() as patch:
        if not fused:
            patch.setattr(fused_step, "_extension", lambda: None)
        cache = KVCache(model.config, 256, model.rope.shift, keep=4)
        logits = model(mx.array([ids]), cache)[0, -1]
        out, nodes = [logits], None
        for _ in range(steps):
            token = mx.argmax(logits).reshape(1, 1)
            mx.eval(token)  # the step's graph alone, not the one before it
            step = model(token, cache)
            nodes = nodes or graph_nodes(step)
            logits = step[0, -1]
            out.append(logits)
        mx.eval(out)
        return out, nodes


@pytest.mark.skipif(qmv.extension() is None, reason=f"SIMD kernel: {qmv.unavailable_reason()}")
def test_decode_with_fused_ops_matches_the_ops_they_replace(monkeypatch):
    """A tiny 4-bit model decodes the same logits with the fused ops as without, in a fraction of the nodes."""
    config = {
        **BASE_CONFIG,
        **VARIANTS["llama3"],
        "hidden_size": 96,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
    }
    model = tiny_quantized(config)
    ids = list(range(3, 40))
    fused, fused_nodes = decode_run(model, ids, 12, monkeypatch, fused=True)
    plain, plain_nodes = decode_run(model, ids, 12, monkeypatch, fused=False)
    worst = max(mx.abs(a - b).max().item() for a, b in zip(fused, plain))
    assert worst < 1e-4, worst
    assert [mx.argmax(a).item() for a in fused] == [mx.argmax(b).item() for b in plain]
    assert fused_nodes * 3 < plain_nodes, (fused_nodes, plain_nodes)


@pytest.mark.skipif(qmv.extension() is None, reason=f"SIMD kernel: {qmv.unavailable_reason()}")
def test_step_profiles_before_runs_mlxs_ops_and_after_the_extensions():
    """bench's before/after of one step: 'before' (device.switched_off) builds the ops the model ran before the
    fused ops and attention moved into the extension, and spends no time in them; 'after' does both."""
    config = {**BASE_CONFIG, **VARIANTS["llama3"], "hidden_size": 96, "num_attention_heads": 6}
    config["num_key_value_heads"] = 2
    loaded = SimpleNamespace(model=tiny_quantized(config))
    ids = list(range(3, 300))
    after = profile_decode_step(loaded, ids, steps=3)
    before = profile_decode_step(loaded, ids, steps=3, primitives=False)
    assert after["primitives"] and not before["primitives"]
    assert after["attention_ms"] > 0 and after["fused_ms"] > 0
    assert before["attention_ms"] == 0 and before["fused_ms"] == 0
    assert after["nodes"] * 3 < before["nodes"], (after["nodes"], before["nodes"])
    assert device.cpu_primitives()  # the switch is back on once the pair is measured
