"""Whether the extension's CPU primitives may run: the one question every call site of them asks.

They run on the CPU only; on the gpu path, MLX's own fused kernels stay (nothing there gets
slower). The answer is model.compute_path's (GLASSCHAT_PATH), asked here in one place.
"""

from model import compute_path


def cpu_primitives() -> bool:
    """True on the cpu path, where the extension's primitives apply."""
    return compute_path.on_cpu()
