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
# for decode, the SIMD matvec kernel, and prefill's GEMM on dequantized weights.
CPU_ONLY_ROUTES = (
    ("model.network.fast_math", "exp"),
    ("model.network.fast_math", "swiglu"),
    ("model.network.fast_math", "causal_attention"),
    ("model.network.rope", "RoPE._rotate_one"),
    ("model.kernels.qmv", "matvec"),
    ("model.network.quantized", "_dequantized"),
)


def _refused(route: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"the gpu path took a CPU-only route: {route}")

    return refused


def refuse_cpu_routes(patch: pytest.MonkeyPatch) -> None:
    for module_name, name in CPU_ONLY_ROUTES:
        owner = importlib.import_module(module_name)
        *outer, attribute = name.split(".")
        for part in outer:
            owner = getattr(owner, part)
        patch.setattr(owner, attribute, _refused(f"{module_name}.{name}"))


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
