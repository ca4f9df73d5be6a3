"""Use the system OpenBLAS for MLX's CPU backend on Linux, when it is there.

The `mlx[cpu]` wheel bundles the reference BLAS: single-threaded and about
4 GFLOP/s on a float32 GEMM. Loading `libopenblas.so.0` with RTLD_GLOBAL before
the first `import mlx` makes MLX resolve its BLAS symbols to OpenBLAS instead
(about 160 GFLOP/s on the same GEMM). It must run before mlx is imported, which
is why `model/__init__.py` calls it first.
"""

import ctypes
import os
import sys

OPENBLAS_SONAME = "libopenblas.so.0"

# What `blas_in_use()` reports; set once by `prefer_system_openblas()`.
_state = {"blas": "platform default"}


def prefer_system_openblas() -> None:
    if sys.platform != "linux":
        _state["blas"] = "Accelerate" if sys.platform == "darwin" else "platform default"
        return
    if os.environ.get("GLASSCHAT_REFERENCE_BLAS"):
        _state["blas"] = "reference BLAS (bundled with mlx, by request)"
        return
    if "mlx.core" in sys.modules:
        # Too late: mlx already bound its BLAS symbols.
        _state["blas"] = "unknown (mlx was imported before glasschat)"
        return
    try:
        ctypes.CDLL(OPENBLAS_SONAME, mode=ctypes.RTLD_GLOBAL)
        _state["blas"] = "OpenBLAS (system)"
    except OSError:
        _state["blas"] = "reference BLAS (bundled with mlx; install libopenblas0-pthread)"


def blas_in_use() -> str:
    return _state["blas"]
