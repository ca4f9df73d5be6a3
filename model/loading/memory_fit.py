"""Whether a model fits this machine, decided from the file's headers before any weight is read.

The estimate is the weights as they will be held (from the GGUF or safetensors headers:
each tensor's size and type, in the layout the loader will choose), plus the KV cache at
its capacity, plus working space (one prefill block's activations and attention scores,
a verify pass's logits, and on the cpu path one layer's dequantized copy). "Available" is
the GPU's recommended working set where MLX computes on a GPU (Metal reports one; CUDA its
memory), and the machine's memory on a CPU. A model that needs more is refused in one line,
bytes against bytes. The same check refuses a config whose shape alone cannot fit (say
1,024 layers on a small machine), whatever its files hold, before anything is allocated; an
implausible one (100,000 layers) is refused before this by model.loading.config_checks.

On a GPU, `wire` then sets MLX's wired limit as mlx-lm's `generate` does (its
`wired_limit`): to the recommended working set, where the device reports one, so the
weights are not paged out between steps; mlx-lm warns when a model is over 90% of it,
and model info says so here.
"""

import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from model import compute_path
from model.errors import ModelError
from model.network.config import ModelConfig

DEFAULT_CAPACITY = 2048  # glasschat's default --max-kv-size (model.cache.settings.CacheSettings)
PREFILL_BLOCK = 256  # tokens per prefill pass (model.runtime.generate.PREFILL_CHUNK)
VERIFY_ROWS = 8  # rows of logits a prompt-lookup verify pass computes
CLOSE_TO_WORKING_SET = 0.9  # mlx-lm's warning threshold: a model over this share of it may be slow
KERNEL_BITS = (4, 8)  # what the SIMD kernel multiplies (model.kernels.qmv.BITS)

_GGUF_BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8, "Q4_K": 4, "Q5_K": 5, "Q5_0": 5, "Q5_1": 5}  # kept quantized
_FLOAT_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
_SAFETENSORS_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "U32": 4, "I32": 4, "I64": 8, "U8": 1, "I8": 1}


@dataclass(frozen=True)
class TensorSize:
    """One tensor as a header describes it: enough to say how many bytes it takes in each layout."""

    elements: int  # weights it holds, unpacked
    float_bytes: int = 0  # bytes per element as stored, for a floating tensor; 0 when quantized
    bits: int = 0  # quantized: bits per weight kept; 0 for a floating tensor
    group_size: int = 32  # quantized: weights per scale and bias
    scale_bytes: int = 2  # quantized: bytes of each stored scale and bias
    matrix: bool = False  # 2-D (a layer's weights), as opposed to norms and biases
    embedding: bool = False  # the token embedding: read row by row, never multiplied whole by a block


def gguf_tensor_sizes(infos: Iterable) -> list[TensorSize]:
    """From a GGUF's tensor infos (model.loading.gguf_header.TensorInfo): types the loader keeps
    quantized at their bits with float16 scales, F32/F16/BF16 as they are, the rest as float16."""
    sizes = []
    for info in infos:
        shape = {"matrix": len(info.shape) == 2, "embedding": info.name.startswith("token_embd")}
        if info.kind in _GGUF_BITS:
            sizes.append(TensorSize(info.elements, bits=_GGUF_BITS[info.kind], **shape))
        else:
            sizes.append(TensorSize(info.elements, float_bytes=_FLOAT_BYTES.get(info.kind, 2), **shape))
    return sizes


def safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file (its first 8 bytes say how long it is)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelError(f"'{path.name}' is truncated or corrupt: re-download it.")
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 2**20:
            raise ModelError(f"'{path.name}' is truncated or corrupt (a {length}-byte header): re-download it.")
        try:
            return json.loads(f.read(length))
        except ValueError:
            raise ModelError(f"'{path.name}' is truncated or corrupt (its header is not JSON): re-download it.")


def safetensors_tensor_sizes(files: Iterable[Path], group_size: int) -> list[TensorSize]:
    """From safetensors headers: MLX-quantized matrices (uint32 weights beside `.scales`) unpacked."""
    entries = {}
    for path in files:
        entries.update({k: v for k, v in safetensors_header(path).items() if k != "__metadata__"})
    sizes = []
    for name, entry in entries.items():
        shape = entry.get("shape", [])
        count = 1
        for n in shape:
            count *= int(n)
        stem = name[: -len(".weight")] if name.endswith(".weight") else None
        scales = entries.get(f"{stem}.scales") if stem else None
        if name.endswith((".scales", ".biases")) and f"{name.rsplit('.', 1)[0]}.weight" in entries:
            continue  # counted with their weight
        kind = {"matrix": len(shape) == 2, "embedding": "embed_tokens" in name}
        if scales is not None and shape and scales.get("shape") and scales["shape"][-1]:  # 0: a hostile header
            bits = shape[-1] * 32 // (scales["shape"][-1] * group_size)
            scale_bytes = _SAFETENSORS_BYTES.get(scales.get("dtype"), 2)
            sizes.append(TensorSize(count * 32 // max(bits, 1), bits=bits, group_size=group_size,
                                    scale_bytes=scale_bytes, **kind))  # fmt: skip
        else:
            sizes.append(TensorSize(count, float_bytes=_SAFETENSORS_BYTES.get(entry.get("dtype"), 2), **kind))
    return sizes


def held_layout(tensors: list[TensorSize], layout: str, kernel_built: bool) -> str:
    """The layout the loader will choose (model.loading.weights.resolve_layout), from the headers alone."""
    if layout != "auto":
        return layout
    quantized = any(t.bits for t in tensors)
    if compute_path.on_gpu():
        return "quantized" if quantized else "native"
    matrices = [t for t in tensors if t.matrix]
    takes_all = kernel_built and quantized and all(t.bits in KERNEL_BITS for t in matrices)
    return "quantized" if takes_all else "float32"


def weight_bytes(tensors: list[TensorSize], layout: str) -> int:
    """Bytes of the weights held in `layout` (a resolved one). On the cpu path, quantized scales are float32."""
    if layout in _FLOAT_BYTES:
        return sum(t.elements * _FLOAT_BYTES[layout] for t in tensors)
    scale_bytes = 4 if compute_path.on_cpu() else None
    total = 0
    for t in tensors:
        if t.bits:
            groups = t.elements // t.group_size
            total += t.elements * t.bits // 8 + 2 * groups * (scale_bytes or t.scale_bytes)
        else:
            total += t.elements * t.float_bytes
    return total


def activation_bytes(tensors: list[TensorSize], layout: str) -> int:
    """Bytes of one activation (and one K or V element): what the weights compute in."""
    if layout in _FLOAT_BYTES:
        return _FLOAT_BYTES[layout]
    if compute_path.on_cpu():
        return 4  # float32 scales make the activations float32 (model.loading.weights)
    widths = [t.scale_bytes if t.bits else t.float_bytes for t in tensors if t.matrix]
    return max(widths, default=4)


@dataclass(frozen=True)
class Estimate:
    weights: int
    cache: int
    working: int
    capacity: int  # the KV cache's tokens

    @property
    def total(self) -> int:
        return self.weights + self.cache + self.working


def estimate(config: ModelConfig, tensors: list[TensorSize], layout: str, capacity: int = DEFAULT_CAPACITY,
             kv_bits: Optional[int] = None, kernel_built: bool = False) -> Estimate:  # fmt: skip
    """Weights in the layout the loader will pick, the cache full at `capacity`, and working space."""
    capacity = min(capacity, config.max_position_embeddings)  # the cache never holds more (KVCache)
    held = held_layout(tensors, layout, kernel_built)
    act = activation_bytes(tensors, held)
    kv, hd, layers = config.num_key_value_heads, config.head_dim, config.num_hidden_layers
    per_vector = hd * kv_bits // 8 + 2 * (hd // 32) * act if kv_bits else hd * act  # one head's K or V
    cache = layers * capacity * 2 * kv * per_vector
    block = min(PREFILL_BLOCK, capacity)
    scores = config.num_attention_heads * block * capacity * 4  # one layer's attention weights, float32
    activations = block * (4 * config.hidden_size + 3 * config.intermediate_size) * act
    logits = VERIFY_ROWS * config.vocab_size * 4 * 2  # logits and log-probabilities
    dequantized = 0
    if held == "quantized" and compute_path.on_cpu():  # prefill's GEMM on one layer's float32 copy
        dequantized = max((t.elements * 4 for t in tensors if t.matrix and t.bits and not t.embedding), default=0)
    return Estimate(weight_bytes(tensors, held), cache, scores + activations + logits + dequantized, capacity)


@dataclass(frozen=True)
class Memory:
    available: int  # bytes a model may use here
    where: str  # what that is, for the one line: "this GPU's recommended working set", "this machine"
    recommended: Optional[int] = None  # the GPU's recommended working set, where it reports one (Metal)


def device_info() -> dict:
    import mlx.core as mx

    return dict(mx.device_info())


def machine_memory() -> int:
    """The machine's physical memory in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return int(device_info().get("memory_size", 0))


def available_memory() -> Memory:
    if compute_path.device() == "gpu":
        info = device_info()
        recommended = info.get("max_recommended_working_set_size")
        if recommended:
            return Memory(int(recommended), "this GPU's recommended working set", int(recommended))
        total = info.get("total_memory") or info.get("memory_size")
        if total:
            return Memory(int(total), "this GPU")
    return Memory(machine_memory(), "this machine")


def gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def check(needed: Estimate, memory: Memory) -> None:
    """One line, bytes against bytes, when the model cannot fit; nothing has been read or allocated yet."""
    if needed.total <= memory.available:
        return
    raise ModelError(
        f"This model needs {gb(needed.total)}, {memory.where} has {gb(memory.available)} "
        f"(weights {gb(needed.weights)}, KV cache of {needed.capacity} tokens {gb(needed.cache)}, "
        f"working space {gb(needed.working)}): pick a smaller or more quantized model, or a smaller --max-kv-size."
    )


def wire(model_bytes: int, memory: Memory) -> dict:
    """On a GPU that reports a recommended working set, MLX's wired limit set to it (mlx-lm's rule);
    what model info shows about it. Nothing on a CPU."""
    if not memory.recommended:
        return {}
    import mlx.core as mx

    mx.set_wired_limit(memory.recommended)
    note = {"wired_limit": gb(memory.recommended)}
    if model_bytes > CLOSE_TO_WORKING_SET * memory.recommended:
        share = model_bytes / memory.recommended
        note["memory_note"] = f"the weights are {share:.0%} of the recommended working set: decoding may be slow"
    return note
