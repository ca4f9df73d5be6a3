"""The SIMD quantized matrix-vector kernel, when it was built, or why it is not in use.

MLX's CPU `quantized_matmul` has no SIMD on x86, so a decode step through it
is slower than through float32 weights. The C++ extension `_qmv` (sources
beside this file, built by `pip install -e .`) multiplies few-row inputs by
MLX's own 4- and 8-bit affine layout with AVX-512 VNNI or AVX2 (x86-64, picked
at run time) or NEON (arm64), the input quantized to int16 per block of 32, so
the inner loop is an exact integer dot product. Everything here
degrades to MLX's own path: no compiler at install, a different mlx at run
time, a failed self-check, or GLASSCHAT_NO_KERNEL=1.
"""

import os
from typing import Optional

import mlx.core as mx

from model import compute_path

DISABLE_ENV = "GLASSCHAT_NO_KERNEL"  # any non-empty value: MLX's own quantized path
THREADS_ENV = "GLASSCHAT_KERNEL_THREADS"
PASS_THREADS_ENV = "GLASSCHAT_KERNEL_PASS_THREADS"  # for 4-8 rows (prompt lookup's verify passes)
MAX_ROWS = 8  # beyond this a GEMM (BLAS on dequantized weights) wins
BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)

_state: dict = {}


def _default_threads() -> int:
    # MLX runs a decode step's other operations on one thread while Python builds
    # the next step's graph on another, so the kernel only gets the cores beyond
    # those two; on a 2-core machine a second kernel thread measured slower (73 us
    # against 139 us for 3072x576 with both cores busy). Past 4 the rows come no faster.
    return max(1, min((os.cpu_count() or 1) - 2, 4))


def _default_pass_threads() -> int:
    # A verify pass is compute-bound (each row pays its own dot products) and nothing else runs
    # meanwhile: it waits for its result before Python builds another step. Measured on 2 cores,
    # the default model, 8 rows: 49.6 ms with 2 threads against 60.3 with 1 (a 1-row step: 21.0
    # against 20.2, so decode steps keep `_default_threads`).
    return max(1, min(os.cpu_count() or 1, 4))


def _self_check(ext) -> Optional[str]:
    """A small product against mx.dequantize; None when it agrees."""
    key = mx.random.key(7)
    w_float = mx.random.normal((40, 128), key=key)
    x = mx.random.normal((3, 128), key=mx.random.split(key)[0])
    for bits in BITS:
        w, scales, biases = mx.quantize(w_float, group_size=32, bits=bits)
        got = ext.quantized_matvec(x, w, scales, biases, 32, bits)
        want = x @ mx.dequantize(w, scales, biases, group_size=32, bits=bits).T
        # int8 inputs: ~1% of the output's scale (the tests hold the exact bound).
        if mx.abs(got - want).max().item() > 0.05 * mx.abs(want).max().item():
            return f"{bits}-bit self-check failed"
    return None


def _load():
    if os.environ.get(DISABLE_ENV):
        return None, f"off ({DISABLE_ENV} is set)"
    try:
        from model.kernels import _qmv
    except ModuleNotFoundError:
        return None, "not built: reinstall with a C++ compiler (pip install -e .)"
    except ImportError as exc:
        if "cannot import name" in str(exc):
            return None, "not built: reinstall with a C++ compiler (pip install -e .)"
        return None, f"failed to load ({str(exc).splitlines()[0][:60]})"
    if _qmv.built_for_mlx != mx.__version__:
        return None, f"built for mlx {_qmv.built_for_mlx}, running {mx.__version__}: reinstall (pip install -e .)"
    try:
        failure = _self_check(_qmv)
    except Exception as exc:  # a mismatched nanobind or mlx ABI shows up here, not at import
        failure = f"failed to run ({type(exc).__name__}: {str(exc)[:60]})"
    if failure:
        return None, failure
    _qmv.set_threads(int(os.environ.get(THREADS_ENV) or _default_threads()))
    _qmv.set_pass_threads(int(os.environ.get(PASS_THREADS_ENV) or _default_pass_threads()))
    return _qmv, None


def extension():
    """The loaded `_qmv` module, or None (then `unavailable_reason()` says why)."""
    try:
        return _state["ext"]
    except KeyError:
        _state["ext"], _state["why"] = _load()
        return _state["ext"]


def unavailable_reason() -> Optional[str]:
    extension()
    return _state["why"]


def describe() -> str:
    """One line for model info: which matvec path quantized layers take on this machine."""
    ext = extension()
    if ext is None:
        return f"MLX quantized_matmul (SIMD kernel {unavailable_reason()})"
    threads, passes = ext.threads(), ext.pass_threads()
    also = f"; {passes} for few-row passes" if passes != threads else ""
    return f"SIMD kernel ({ext.kernel_name()}, {threads} thread{'s' if threads > 1 else ''}{also})"


# A decode step checks every layer, so these read a layer's arrays as dict items
# (`layer["scales"]`): MLX's Module.__getattr__ costs ~2 us a lookup.


def fits(layer) -> bool:
    """Whether the kernel knows this layer's layout (4/8-bit affine, float32 scales, its group sizes)."""
    if getattr(layer, "mode", "affine") != "affine" or layer.bits not in BITS or layer.group_size not in GROUP_SIZES:
        return False
    return layer["scales"].dtype == mx.float32 and layer["biases"].dtype == mx.float32


def applies(x: mx.array, layer) -> bool:
    """Whether `layer(x)` should take the kernel: few float32 rows, on the CPU, a layout it knows."""
    if x.dtype != mx.float32 or x.size > MAX_ROWS * x.shape[-1]:
        return False
    return extension() is not None and compute_path.on_cpu() and fits(layer)


def matvec(x: mx.array, layer) -> mx.array:
    """x @ dequantize(layer's weight).T through the kernel (check `applies` first)."""
    ext = _state["ext"]
    return ext.quantized_matvec(x, layer["weight"], layer["scales"], layer["biases"], layer.group_size, layer.bits)
