"""Whether the extension's CPU primitives may run: the one question every call site of them asks.

They run on the CPU only; on the gpu path, MLX's own fused kernels stay (nothing there gets
slower). The answer is model.compute_path's (GLASSCHAT_PATH), asked here in one place.
`switched_off()` runs a stretch of code as it ran before attention and the small ops moved
into the extension (the matvec kernel stays): bench's before/after of one decode step.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from model import compute_path

_switched_off = False


def cpu_primitives() -> bool:
    """True on the cpu path, where the extension's primitives apply (unless switched off)."""
    return compute_path.on_cpu() and not _switched_off


@contextmanager
def switched_off() -> Iterator[None]:
    """Attention over the cache and the fused small ops run as MLX's ops inside this block.

    Read when a step's graph is built, so a graph built inside runs MLX's ops wherever it is
    evaluated. For measuring (bench.step_profile), not for the app."""
    global _switched_off
    before, _switched_off = _switched_off, True
    try:
        yield
    finally:
        _switched_off = before
