"""The model's quantized layers with the SIMD kernel, and without it.

Decode steps (one row) go through the kernel, prefill's many rows through a
GEMM on dequantized weights; both must give mlx-lm's golden log-probabilities.
Without the extension (not built, or switched off) the layers fall back to
MLX's own quantized_matmul and still do.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest
from tiny_models import BASE_CONFIG, VARIANTS, random_weights

from model.cache.kv_cache import KVCache
from model.cache.kv_factory import compute_dtype
from model.kernels import qmv
from model.loading.config import config_from_hf
from model.loading.fusion import fuse_weights
from model.loading.loader import load_model
from model.loading.weights import apply_weights
from model.network.quantized import QuantizedEmbedding, QuantizedLinear
from model.network.transformer import Transformer
from model.runtime.generate import prefill

TOLERANCE = 0.05  # as tests/test_golden_generation.py: float32 against mlx-lm's 4-bit run
ROOT = Path(__file__).resolve().parent.parent

kernel_in_use = pytest.mark.skipif(qmv.extension() is None, reason=f"SIMD kernel: {qmv.unavailable_reason()}")


def decoded_logprobs_error(lm, case) -> tuple[float, list[int]]:
    """Prefill the prompt, then feed the golden reply one token at a time (each step a one-row
    forward pass); the worst log-probability error over each step's golden top 5, and each step's argmax."""
    model = lm.model
    cache = KVCache(lm.config, 256, model.rope.shift, dtype=compute_dtype(model))
    logits = prefill(model, cache, case["prompt_ids"])
    worst, argmax = 0.0, []
    for token, top5 in zip(case["greedy_ids"], case["top5_logprobs"]):
        logprobs = logits - mx.logsumexp(logits)
        ids, expected = zip(*top5)
        error = mx.abs(logprobs[mx.array(ids)] - mx.array(expected)).max()
        worst = max(worst, error.item())
        argmax.append(mx.argmax(logprobs).item())
        logits = model(mx.array([[token]]), cache)[0, -1]
    return worst, argmax


@kernel_in_use
def test_decode_through_the_kernel_matches_golden(golden_greedy):
    lm = load_model(None, layout="quantized")
    assert lm.info()["matvec"].startswith("SIMD kernel")
    one_row = mx.zeros((1, 1, lm.config.hidden_size))
    layers = [m for m in lm.model.modules() if isinstance(m, (QuantizedLinear, QuantizedEmbedding))]
    assert len(layers) == 4 * lm.config.num_hidden_layers + 1  # qkv, o, gate_up, down; the tied head
    assert all(qmv.applies(mx.zeros((1, 1, m.weight.shape[1] * 32 // m.bits)), m) for m in layers)
    assert not qmv.applies(mx.zeros((1, qmv.MAX_ROWS + 1, lm.config.hidden_size)), layers[0])
    assert qmv.applies(one_row, layers[0])
    for case in golden_greedy[:2]:  # 47 decode steps; the other two cases add no new shapes
        worst, argmax = decoded_logprobs_error(lm, case)
        assert worst < TOLERANCE, case["user"]
        assert argmax == case["greedy_ids"], case["user"]


def tiny_quantized_model(variant: str, bits: int) -> Transformer:
    config = {**BASE_CONFIG, **VARIANTS[variant]}
    weights = random_weights(config)
    for name in [n for n in weights if n.endswith("proj.weight")]:
        stem = name[: -len(".weight")]
        weights[name], weights[f"{stem}.scales"], weights[f"{stem}.biases"] = mx.quantize(
            weights[name], group_size=64, bits=bits
        )
    fused = fuse_weights(weights, config["num_hidden_layers"])
    model = Transformer(config_from_hf(config), fused=True)
    apply_weights(model, fused, 64, "quantized")
    return model


@kernel_in_use
@pytest.mark.parametrize("bits", [4, 8])
def test_tiny_qwen2_decode_steps_match_the_gemm_path(bits):
    """q/k/v biases (Qwen2) are added after the kernel: cached one-row steps against one full pass."""
    model = tiny_quantized_model("qwen2", bits)
    assert qmv.applies(mx.zeros((1, 1, 64)), model.model.layers[0].self_attn.qkv_proj)
    ids = [(5 * i + 1) % 96 for i in range(12)]
    full = model(mx.array([ids]))[0]  # 12 rows: the GEMM path
    cache = KVCache(model.config, 64, model.rope.shift)
    steps = [model(mx.array([[t]]), cache)[0, -1] for t in ids]  # 1 row each: the kernel
    # int16 inputs put each product within ~1e-4 of the float one; this random, unnormalized
    # model compounds that to ~2e-3 (MLX's own path: 5e-6). A bias left out would be off by ~0.5.
    assert mx.abs(mx.stack(steps) - full).max().item() < 1e-2


def test_switched_off_by_the_environment(monkeypatch):
    saved = dict(qmv._state)
    try:
        monkeypatch.setenv(qmv.DISABLE_ENV, "1")
        qmv._state.clear()
        layer = QuantizedLinear(64, 8, bias=False, group_size=32, bits=4)
        layer.scales, layer.biases = layer.scales.astype(mx.float32), layer.biases.astype(mx.float32)
        assert not qmv.applies(mx.zeros((1, 64)), layer)
        assert qmv.describe() == f"MLX quantized_matmul (SIMD kernel off ({qmv.DISABLE_ENV} is set))"
    finally:
        qmv._state.clear()
        qmv._state.update(saved)


FALLBACK_SCRIPT = """
import json, sys
sys.modules["model.kernels._qmv"] = None  # as if it was never built: importing it raises ImportError
sys.path.insert(0, "tests")
import model
from model.loading.loader import load_model
from test_qmv_integration import decoded_logprobs_error
case = json.loads(sys.stdin.read())
lm = load_model(None, layout="quantized")
worst, argmax = decoded_logprobs_error(lm, case)
print(json.dumps({"matvec": lm.info()["matvec"], "worst": worst, "argmax": argmax}))
"""


def test_without_the_extension_the_model_runs_on_mlx(golden_greedy):
    case = golden_greedy[0]
    env = {k: v for k, v in os.environ.items() if k != qmv.DISABLE_ENV}
    out = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT],
        input=json.dumps(case),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["matvec"].startswith("MLX quantized_matmul (SIMD kernel not built")
    assert result["worst"] < TOLERANCE
    assert result["argmax"] == case["greedy_ids"]


def test_built_wherever_a_compiler_is():
    """A broken build must not pass for 'no compiler': then the suite says why the kernel is off."""
    if os.environ.get(qmv.DISABLE_ENV) or not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("kernel switched off, or no C++ compiler here")
    assert qmv.extension() is not None, qmv.unavailable_reason()


@pytest.mark.parametrize("code_path", ["cpu"], indirect=True)  # the CPU's auto layout
def test_auto_layout_is_quantized_where_the_kernel_takes_every_matrix(code_path, monkeypatch):
    """--weights auto on a CPU: the file's 4-bit weights through the kernel where it is built,
    float32 through BLAS where it is not (MLX's own quantized matmul is slower than float32 there)."""
    if qmv.extension() is not None:
        lm = load_model(None)
        assert (lm.layout, lm.info()["weight_dtype"]) == ("quantized", "q4 (affine, group 32)")
        assert lm.info()["matvec"].startswith("SIMD kernel")
    saved = dict(qmv._state)
    try:
        monkeypatch.setenv(qmv.DISABLE_ENV, "1")
        qmv._state.clear()
        lm = load_model(None)
        assert (lm.layout, lm.info()["weight_dtype"]) == ("float32", "float32")
    finally:
        qmv._state.clear()
        qmv._state.update(saved)


@kernel_in_use
def test_auto_layout_wants_every_matrix_in_a_kernel_layout():
    from model.loading.weights import kernel_takes_all

    w, scales, biases = mx.quantize(mx.zeros((64, 64)), group_size=32, bits=4)
    quantized = {"a.weight": w, "a.scales": scales, "a.biases": biases, "norm.weight": mx.ones((64,))}
    groups = {"a": {"group_size": 32, "bits": 4}}
    assert kernel_takes_all(quantized, groups)
    # A matrix left in float16 (a GGUF's Q6_K), or bits the kernel lacks: float32 instead.
    assert not kernel_takes_all({**quantized, "b.weight": mx.zeros((64, 64), mx.float16)}, groups)
    assert not kernel_takes_all(quantized, {"a": {"group_size": 32, "bits": 5}})
    assert not kernel_takes_all({"b.weight": mx.zeros((64, 64))}, {})
