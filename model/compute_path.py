"""Which code path the model takes: "gpu" (what every Mac runs) or "cpu" (the fast paths for x86 CPUs).

The product's main platform is Apple silicon, where MLX computes on the GPU.
On a CPU glasschat takes other routes that measured faster there: its own exp
and softmax (`fast_math`), a RoPE table for decode, the SIMD matvec kernel,
prefill through BLAS on dequantized weights, float32 weights where the kernel
cannot take them. Each of those choices asks this module, and nothing else
decides on `mx.default_device()` (a test reads the sources to hold that).

`GLASSCHAT_PATH=auto|cpu|gpu` overrides the answer; `auto` (the default) is the
device MLX has. With `gpu` on a machine that has only a CPU, MLX's CPU runs
exactly the operations a GPU would be given: `mx.fast.scaled_dot_product_attention`
with its masks, quantized weights in MLX's layout through `mx.quantized_matmul`,
`mx.fast.rope`, MLX's softmax and logsumexp, the GPU's weight-layout and
prompt-lookup rules. That is how the tests prove the Mac's path on Linux.
With `cpu` on a machine with a GPU, MLX is moved to its CPU device, since
the kernel extension and the BLAS path compute on the CPU only.
"""

import os

ENV = "GLASSCHAT_PATH"
CHOICES = ("auto", "cpu", "gpu")

_state: dict = {}  # "path": the answer, worked out once per process (see `reset`)


def asked() -> str:
    """What the environment asks for ("auto" when unset); a value it cannot be is one line."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in CHOICES:
        from model.errors import ModelError

        raise ModelError(f"{ENV}={os.environ[ENV]!r} is not a path glasschat knows: set it to auto, cpu or gpu.")
    return value


def device() -> str:
    """The device MLX computes on: "gpu" or "cpu"."""
    import mlx.core as mx

    return "gpu" if mx.default_device() == mx.gpu else "cpu"


def current() -> str:
    """ "cpu" or "gpu": the path every device decision follows. Asked per layer and step, so it is kept."""
    try:
        return _state["path"]
    except KeyError:
        pass
    value = asked()
    path = device() if value == "auto" else value
    if path == "cpu" and device() == "gpu":
        import mlx.core as mx

        mx.set_default_device(mx.cpu)
    _state["path"] = path
    return path


def on_cpu() -> bool:
    """Whether the CPU's own routes are taken (see the module docstring for which)."""
    return current() == "cpu"


def on_gpu() -> bool:
    return current() == "gpu"


def describe() -> str:
    """One line for model info and the bench: the path, and the device when they differ."""
    path, where = current(), device()
    if path == where:
        return path
    return f"{path} (run on the {where.upper()}: {ENV}={path})"


def reset() -> None:
    """Forget the answer, so the next question reads the environment again (tests switch paths)."""
    _state.clear()
