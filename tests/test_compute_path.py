"""One module decides the code path (model.compute_path), and the gpu path runs only what a GPU runs.

The gpu path is what every Mac takes. On this CPU, GLASSCHAT_PATH=gpu must send MLX exactly
the operations a GPU would get: the `code_path` fixture makes every CPU-only route (our exp,
SiLU and softmax, the prefill attention written for the CPU, the RoPE table, the SIMD matvec
kernel, the BLAS GEMM on dequantized weights) fail on the gpu path, and a conversation still
runs on a 4-bit model kept in MLX's layout.
"""

import json
import re
from pathlib import Path

import mlx.core as mx
import pytest
from cli_helpers import assert_one_line_error, glasschat
from engine_harness import SyncChat

from model import compute_path
from model.kernels import qmv
from model.network import fast_math
from model.runtime import speculate
from model.runtime.events import TokenGenerated, TurnEnded

ROOT = Path(__file__).resolve().parents[1]


def test_nothing_else_decides_on_the_default_device():
    """Every device decision asks model.compute_path: no other source reads mx.default_device()."""
    asked = []
    for package in ("model", "chat", "bench", "scripts"):
        for source in sorted((ROOT / package).rglob("*.py")):
            if re.search(r"default_device\s*\(", source.read_text()):
                asked.append(str(source.relative_to(ROOT)))
    assert asked == ["model/compute_path.py"]


def test_the_environment_picks_the_path(monkeypatch):
    for value, expected in (("cpu", "cpu"), ("gpu", "gpu"), (" GPU ", "gpu"), ("auto", compute_path.device())):
        monkeypatch.setenv(compute_path.ENV, value)
        compute_path.reset()
        assert compute_path.current() == expected
    monkeypatch.delenv(compute_path.ENV)
    compute_path.reset()
    assert compute_path.current() == compute_path.device()  # unset is auto
    compute_path.reset()


def test_a_bad_value_is_one_line():
    proc = glasschat("run", "--max-tokens", "1", "Hello.", env={**_environ(), compute_path.ENV: "metal"}, timeout=60)
    assert_one_line_error(proc, "GLASSCHAT_PATH='metal'", "auto, cpu or gpu")


def _environ() -> dict:
    import os

    return dict(os.environ)


@pytest.fixture(scope="module")
def quantized_chat_model(tmp_path_factory, tiny_chat_model):
    """The tiny chat model with every matrix 4-bit, group 32, float16 scales (as MLX folders and GGUFs keep them)."""
    folder = tmp_path_factory.mktemp("tiny-q4")
    source = Path(tiny_chat_model)
    weights = {}
    for name, value in mx.load(str(source / "model.safetensors")).items():
        if value.ndim == 2:
            w, scales, biases = mx.quantize(value.astype(mx.float16), group_size=32, bits=4)
            stem = name[: -len(".weight")]
            weights.update({name: w, f"{stem}.scales": scales, f"{stem}.biases": biases})
        else:
            weights[name] = value.astype(mx.float16)
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    config = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization": {"group_size": 32, "bits": 4}}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text((source / name).read_text())
    return str(folder)


@pytest.mark.parametrize("code_path", ["gpu"], indirect=True)
def test_the_gpu_path_runs_only_what_a_gpu_runs(code_path, quantized_chat_model):
    """The `code_path` fixture makes every CPU-only route fail on the gpu path (tests/code_paths.py)."""
    with pytest.raises(AssertionError, match="CPU-only route"):
        fast_math.exp(mx.array([0.0]))
    run = SyncChat(model=quantized_chat_model, max_tokens=6)
    info = run.loaded.info()
    assert info["compute_path"] == "gpu" and info["weight_layout"] == "quantized"
    assert info["matvec"] == "MLX quantized_matmul"
    layer = run.loaded.model.model.layers[0].mlp.down_proj
    assert layer.scales.dtype == mx.float16  # kept as stored: the CPU's float32 copy is its own rule
    assert speculate.pays_off(run.loaded.model)  # prompt lookup is on by default on a GPU
    run.send("one two three four one two three four")
    ended = [e for e in run.events if isinstance(e, TurnEnded)]
    assert len(ended) == 1 and ended[0].stats.generated_tokens == 6


@pytest.mark.parametrize("code_path", ["cpu"], indirect=True)
def test_the_cpu_path_takes_its_own_routes(code_path, quantized_chat_model, monkeypatch):
    """The counterpart: the same model on the cpu path goes through the kernel (where it is built)."""
    calls = []
    matvec = qmv.matvec
    monkeypatch.setattr(qmv, "matvec", lambda x, layer: calls.append(1) or matvec(x, layer))
    run = SyncChat(model=quantized_chat_model, max_tokens=4)
    info = run.loaded.info()
    assert info["compute_path"] == "cpu"
    run.send("Hello there.")
    assert [e for e in run.events if isinstance(e, TokenGenerated)]
    if qmv.extension() is not None:
        assert info["weight_layout"] == "quantized" and calls
    else:
        assert info["weight_layout"] == "float32"


@pytest.mark.parametrize("path", ["cpu", "gpu"])
def test_run_json_says_which_path_ran(path, tiny_chat_model):
    proc = glasschat(
        "run", "--json", "--model", tiny_chat_model, "--max-tokens", "3", "Hello.",
        env={**_environ(), compute_path.ENV: path}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["path"] == path and out["model"]["compute_path"] == path
    assert out["model"]["backend"] == compute_path.device()


def test_the_welcome_line_and_model_info_say_the_path():
    from chat.screens.model_info import info_table
    from chat.widgets.welcome import where_it_runs

    assert where_it_runs({"backend": "gpu", "compute_path": "gpu"}) == "on the GPU"
    assert "through the GPU's path" in where_it_runs({"backend": "cpu", "compute_path": "gpu"})
    assert where_it_runs({"backend": "cpu", "compute_path": "cpu", "blas": "OpenBLAS"}) == "on the CPU with OpenBLAS"
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(info_table({"backend": "cpu", "compute_path": "gpu", "parameters": 1e6, "weight_bytes": 1}))
    shown = console.export_text()
    assert "code path" in shown and "GPU's operations, run on the CPU" in shown


def test_bench_json_says_which_path_ran(monkeypatch):
    from bench import run as bench_run

    monkeypatch.setattr(bench_run, "gemm_gflops", lambda: 1.0)
    for path in ("cpu", "gpu"):
        monkeypatch.setenv(compute_path.ENV, path)
        compute_path.reset()
        assert bench_run.machine_info(compute_path.device())["path"] == path
    compute_path.reset()
