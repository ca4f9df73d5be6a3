"""Where one decode step's time goes: its graph's nodes, and the split into kernel, attention, other ops, Python.

Here a step's graph is built (Python) and then evaluated (MLX) one after the
other, not overlapped as decoding overlaps them, so the parts add up to the
step. The kernel extension times its own primitives when asked (the matvec
kernel, attention over the cache, the fused small ops); the rest of the
evaluation is MLX's other ops and its per-node cost. Without the extension,
attention runs as MLX ops and is counted among them.
"""

import statistics
import tempfile
import time

import mlx.core as mx

from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings
from model.kernels import qmv
from model.kernels.device import switched_off
from model.runtime.generate import prefill


def graph_nodes(out: mx.array) -> int:
    """How many operations compute `out` (not yet evaluated): what MLX schedules for it."""
    with tempfile.NamedTemporaryFile("r", suffix=".dot") as f:
        mx.export_to_dot(f.name, out)
        return sum("shape=rectangle" in line for line in f.read().splitlines())


def profile_decode_step(loaded, ids: list[int], steps: int = 30, primitives: bool = True) -> dict:
    """The default split of a one-token step after `ids` fill the cache (milliseconds, means over `steps`).

    `primitives=False`: the step as it ran before attention and the small ops moved into the
    extension (model.kernels.device.switched_off; the matvec kernel stays), the "before" of a pair."""
    if not primitives:
        with switched_off():
            return {**profile_decode_step(loaded, ids, steps), "primitives": False}
    model = loaded.model
    cache = make_cache(model, CacheSettings(max_kv_size=len(ids) + 64, keep=4))
    mx.eval(prefill(model, cache, ids))
    token = mx.array([[ids[-1]]])

    def step() -> tuple[float, float]:
        start = time.perf_counter()
        out = model(token, cache)
        built = time.perf_counter()
        mx.eval(out)
        done = time.perf_counter()
        cache.rollback(1)
        return built - start, done - built

    nodes = graph_nodes(model(token, cache))
    cache.rollback(1)
    for _ in range(3):  # warm-up: allocator, compiled kernels, tables
        step()
    ext = qmv.extension()
    if ext is not None and hasattr(ext, "time_stages"):
        ext.time_stages(True)
    times = [step() for _ in range(steps)]
    stages = {name: seconds / steps * 1e3 for name, seconds, _ in ext.stage_times()} if ext is not None else {}
    if ext is not None and hasattr(ext, "time_stages"):
        ext.time_stages(False)
    python_ms = statistics.fmean(t[0] for t in times) * 1e3
    eval_ms = statistics.fmean(t[1] for t in times) * 1e3
    kernel_ms, attention_ms = stages.get("matvec", 0.0), stages.get("attention", 0.0)
    return {
        "context": len(ids),
        "primitives": True,
        "nodes": nodes,
        "step_ms": python_ms + eval_ms,
        "python_ms": python_ms,
        "kernel_ms": kernel_ms,
        "attention_ms": attention_ms,  # 0: attention ran as MLX ops, inside other_ms
        "fused_ms": stages.get("fused", 0.0),  # the fused norms, RoPE: part of other_ms
        "other_ms": eval_ms - kernel_ms - attention_ms,
    }


def describe(row: dict) -> str:
    """One line for the bench's report."""
    attention = f"attention {row['attention_ms']:.1f}" if row["attention_ms"] else "attention in MLX ops"
    before = "" if row.get("primitives", True) else " (before: attention and small ops as MLX ops)"
    return (
        f"{row['context']:5d} tokens{before}: step {row['step_ms']:.1f} ms = kernel {row['kernel_ms']:.1f} + {attention} + "
        f"other ops {row['other_ms']:.1f} (fused ops {row['fused_ms']:.1f} of it) + Python {row['python_ms']:.1f}; "
        f"{row['nodes']} graph nodes"
    )
