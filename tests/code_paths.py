"""The two code paths the tests run on, "cpu" and "gpu" (model.compute_path), and how a test picks one.

A test that takes the `code_path` fixture (or `module_code_path`, for module-scoped set-up;
both in conftest.py) runs once on each path: "cpu" (the routes that measured fastest on x86)
and "gpu" (what every Mac runs: on a machine without a GPU, MLX's CPU computes exactly the
operations a GPU is given). Restrict one test with
    @pytest.mark.parametrize("code_path", ["gpu"], indirect=True)
On the gpu path every CPU-only route (CPU_ONLY_ROUTES) is made to fail for the test's length,
so a gpu-path test that passes has sent MLX only what a GPU would get.
Such tests carry the `code_path` mark. GLASSCHAT_PATH set around pytest runs only that path,
on whatever device MLX has: on a machine with a GPU, `GLASSCHAT_PATH=gpu pytest -m code_path`
is the real GPU's run (scripts/gpu_check.sh).
"""

import importlib
import os
from contextlib import contextmanager

import pytest

from model import compute_path as path_module

PATHS = ("cpu", "gpu")
ONLY_PATH = os.environ.get(path_module.ENV) if os.environ.get(path_module.ENV) in PATHS else None
# What only the cpu path may call: our exp, SiLU and causal attention (fast_math), the RoPE table
# for decode, the SIMD matvec kernel, prefill's GEMM on dequantized weights (whole or in panels),
# and the extension's attention over the cache.
CPU_ONLY_ROUTES = (
    ("model.network.fast_math", "exp"),
    ("model.network.fast_math", "swiglu"),
    ("model.network.fast_math", "causal_attention"),
    ("model.network.rope", "RoPE._rotate_one"),
    ("model.kernels.qmv", "matvec"),
    ("model.network.quantized", "_dequantized"),
    ("model.network.quantized", "_dequantized_rows"),
    ("model.kernels.cache_attention", "attention"),
    ("model.kernels.cache_attention", "quantized_attention"),
)
# Asked on both paths, but only the cpu path may get an answer other than None: the extension
# for a step's fused ops (norm, RoPE with the split into heads, gate and residual in the matvec).
CPU_ONLY_ANSWERS = (("model.kernels.fused_step", "_extension"),)


def _refused(route: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"the gpu path took a CPU-only route: {route}")

    return refused


def _answers_none(route: str, asked):
    def answer(*args, **kwargs):
        value = asked(*args, **kwargs)
        if value is not None:
            raise AssertionError(f"the gpu path was given a CPU-only route: {route}")
        return value

    return answer


def _owner(module_name: str, name: str):
    owner = importlib.import_module(module_name)
    *outer, attribute = name.split(".")
    for part in outer:
        owner = getattr(owner, part)
    return owner, attribute


def refuse_cpu_routes(patch: pytest.MonkeyPatch) -> None:
    for module_name, name in CPU_ONLY_ROUTES:
        owner, attribute = _owner(module_name, name)
        patch.setattr(owner, attribute, _refused(f"{module_name}.{name}"))
    for module_name, name in CPU_ONLY_ANSWERS:
        owner, attribute = _owner(module_name, name)
        patch.setattr(owner, attribute, _answers_none(f"{module_name}.{name}", getattr(owner, attribute)))


@contextmanager
def running_path(path: str):
    """GLASSCHAT_PATH=path inside the block (child processes inherit it), the answer read afresh."""
    if ONLY_PATH and path != ONLY_PATH:
        pytest.skip(f"{path_module.ENV}={ONLY_PATH}: the {path} path is not run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(path_module.ENV, path)
        if path == "gpu":
            refuse_cpu_routes(patch)
        path_module.reset()
        try:
            yield path
        finally:
            path_module.reset()
    path_module.reset()


def on_gpu_device() -> bool:
    """Whether MLX computes on a real GPU here (where the GPU path's tolerances are the GPU's own)."""
    return path_module.device() == "gpu"
