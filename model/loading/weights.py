"""Checkpoint tensors into our module names, quantized or dequantized to the chosen layout."""

import re
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from model import compute_path
from model.errors import ModelError
from model.network.quantized import quantize

# GGUF tensor names (llama.cpp) -> Hugging Face names (what our modules are called).
_GGUF_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_GGUF_LAYER = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",  # Llama's name for the norm *before* the MLP
}
# Where norms also follow each sub-block (Gemma 2/3, OLMo 2), Hugging Face's names shift meaning:
# post_attention_layernorm follows attention, and the MLP's input norm is pre_feedforward_layernorm.
_GGUF_LAYER_NORMS_AFTER = {
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_GGUF_LAYER_FUSED = {"attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"}  # Phi-3
# Not module weights: RoPE frequency factors (Llama 3's rule; Phi-3's longrope, long and short).
_GGUF_ROPE = {"rope_freqs.weight": "rope_freqs", "rope_factors_long.weight": "rope_freqs"}
_GGUF_UNUSED = {"rope_factors_short.weight"}  # the short factors: see RoPE's longrope note
_GGUF_GROUP_SIZE = 32  # Q4_0, Q4_1 and Q8_0 blocks hold 32 weights

LAYOUTS = ("auto", "quantized", "float32", "float16", "bfloat16")


def _layer_names(config) -> dict[str, str]:
    names = dict(_GGUF_LAYER)
    if config.norm_placement != "pre":
        names.update(_GGUF_LAYER_NORMS_AFTER)
    if config.fused_checkpoint:
        names.update(_GGUF_LAYER_FUSED)
    return names


def rename_gguf(tensors: dict[str, mx.array], config) -> dict[str, mx.array]:
    layer_names = _layer_names(config)
    out = {}
    for name, value in tensors.items():
        if name in _GGUF_ROPE:
            out[_GGUF_ROPE[name]] = value
            continue
        if name in _GGUF_UNUSED:
            continue
        m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias|scales|biases)", name)
        if m:
            layer, part, kind = m.groups()
            if part not in layer_names:
                raise ModelError(f"Unexpected tensor '{name}' in the GGUF: not a {config.architecture} layout.")
            out[f"model.layers.{layer}.{layer_names[part]}.{kind}"] = value
            continue
        stem, _, kind = name.rpartition(".")
        if stem not in _GGUF_TOP:
            raise ModelError(f"Unexpected tensor '{name}' in the GGUF: not a {config.architecture} layout.")
        out[f"{_GGUF_TOP[stem]}.{kind}"] = value
    return out


def fold_norm_offset(weights: dict[str, mx.array], offset: float) -> dict[str, mx.array]:
    """Gemma's folders store each RMSNorm scale as w - 1 (the model uses 1 + w): add it back once,
    so the network runs a plain RMSNorm. llama.cpp's converter does the same when it writes a GGUF."""
    if not offset:
        return weights
    return {k: v + offset if k.endswith("norm.weight") else v for k, v in weights.items()}


def quantized_modules(weights: dict[str, mx.array], group_size: int) -> dict[str, dict]:
    """Module path -> {group_size, bits} for every quantized tensor, bits read from the shapes."""
    found = {}
    for name, scales in weights.items():
        if not name.endswith(".scales"):
            continue
        path = name[: -len(".scales")]
        packed = weights[f"{path}.weight"]
        bits = packed.shape[-1] * 32 // (scales.shape[-1] * group_size)
        found[path] = {"group_size": group_size, "bits": bits}
    return found


def dequantize(weights: dict[str, mx.array], groups: dict[str, dict], dtype: mx.Dtype) -> dict[str, mx.array]:
    """Every tensor in `dtype`; quantized ones expanded (scales in float32 for accuracy)."""
    out = {}
    for path, q in groups.items():
        out[f"{path}.weight"] = mx.dequantize(
            weights[f"{path}.weight"],
            weights[f"{path}.scales"].astype(mx.float32),
            weights[f"{path}.biases"].astype(mx.float32),
            group_size=q["group_size"],
            bits=q["bits"],
        ).astype(dtype)
    for name, value in weights.items():
        base = name.rsplit(".", 1)[0]
        if base in groups:
            continue
        out[name] = value.astype(dtype) if mx.issubdtype(value.dtype, mx.floating) else value
    return out


def kernel_takes_all(weights: dict[str, mx.array], groups: dict[str, dict]) -> bool:
    """Whether every matrix is quantized in a layout the SIMD matvec kernel multiplies (and it is built).

    A matrix left in float16 (a GGUF's Q6_K, say) would be cast to float32 at every step."""
    from model.kernels import qmv

    if not groups or qmv.extension() is None:
        return False
    if any(q["bits"] not in qmv.BITS or q["group_size"] not in qmv.GROUP_SIZES for q in groups.values()):
        return False
    matrices = {k[: -len(".weight")] for k, v in weights.items() if k.endswith(".weight") and v.ndim == 2}
    return matrices <= set(groups)


def resolve_layout(layout: str, is_quantized: bool, kernel_fits: bool = False) -> str:
    """`auto` on a CPU: the file's own quantized weights where the SIMD kernel takes every matrix
    (`kernel_takes_all`: a decode step 3.6x faster than float32 through BLAS, at a fifth of the
    memory), else float32 through BLAS (MLX's own CPU quantized matmul has no SIMD on x86, and
    runs a step slower than float32). On a GPU the file's quantized weights, where they are fastest."""
    if layout != "auto":
        return layout
    if compute_path.on_cpu():
        return "quantized" if kernel_fits else "float32"
    return "quantized" if is_quantized else "native"


def apply_weights(model: nn.Module, weights: dict[str, mx.array], group_size: int, layout: str) -> str:
    """Load `weights` into `model` in `layout`; returns the layout used."""
    weights = {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}
    weights = fold_norm_offset(weights, model.config.norm_weight_offset)
    rope_factors: Optional[mx.array] = weights.pop("rope_freqs", None)
    if rope_factors is not None:
        model.rope.set_gguf_freq_factors(rope_factors)
    if model.config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
        weights.pop("lm_head.scales", None)
        weights.pop("lm_head.biases", None)
    groups = quantized_modules(weights, group_size)
    layout = resolve_layout(layout, bool(groups), layout == "auto" and kernel_takes_all(weights, groups))
    if layout in ("float32", "float16", "bfloat16"):
        weights = dequantize(weights, groups, getattr(mx, layout))
    elif groups:
        quantize(model, groups)
    if groups and layout not in ("float32", "float16", "bfloat16") and compute_path.on_cpu():
        # On CPU a quantized matmul whose activations and scales are both
        # float16 runs ~40x slower than when either is float32 (measured:
        # 2.5 s vs 58 ms for 63 tokens through one 576x1536 layer). float32
        # scales make the activations float32 too, at +1/16 of the 4-bit size.
        weights = {k: v.astype(mx.float32) if k.endswith((".scales", ".biases")) else v for k, v in weights.items()}
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as exc:  # MLX's text lists the names over several lines: one line, cut, for the user
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise ModelError(f"The weights don't fit a {model.config.architecture} model of this shape ({detail}).")
    mx.eval(model.parameters())
    return layout


def weight_bytes(model: nn.Module) -> int:
    from mlx.utils import tree_flatten

    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def weight_dtype(model: nn.Module) -> str:
    """The storage of the big matrices, e.g. 'float32' or 'q4 (affine, group 32)'."""
    layer = model.model.layers[0].mlp.down_proj  # never fused
    if isinstance(layer, nn.QuantizedLinear):
        return f"q{layer.bits} (affine, group {layer.group_size})"
    return str(layer.weight.dtype).replace("mlx.core.", "")
