"""The model families we run, each as the switches it sets in `ModelConfig`, and the ones we refuse.

llama.cpp describes an architecture as a table of hyper-parameters and tensor
names, not as a copy of the model; so do we. There is one transformer
(`model/network/transformer.py`); a family is the values of its switches, read
from a Hugging Face `config.json` (keyed by `model_type`) or from GGUF metadata
(keyed by `general.architecture`, with llama.cpp's defaults where the file is
silent). What we do not run gets one line that says what it is.
"""

import math
from collections.abc import Callable
from typing import Any, Optional

from model.errors import ModelError

# Hugging Face model_type -> GGUF general.architecture, for every family we run.
GGUF_NAMES = {
    "llama": "llama",
    "mistral": "llama",  # llama.cpp writes Mistral 7B as llama
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
    "smollm3": "smollm3",
    "olmo2": "olmo2",
}
HF_FAMILIES = tuple(GGUF_NAMES)
GGUF_FAMILIES = {gguf: hf for hf, gguf in reversed(GGUF_NAMES.items())}  # "llama" -> "llama", not "mistral"


def bfloat16_round(x: float) -> float:
    """x as bfloat16 holds it (round to nearest even on the top 16 bits of the float32)."""
    import struct

    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _pattern(n_layers: int, every: int) -> tuple[int, ...]:
    """Layers that are windowed when every `every`-th one is global (Gemma's sliding_window_pattern)."""
    return tuple(i for i in range(n_layers) if (i + 1) % every != 0)


def _gemma(hidden: int, rounded_scale: bool) -> dict:
    # Gemma 3 multiplies by sqrt(d) cast to the weights' dtype, bfloat16 for every released
    # checkpoint (Hugging Face and mlx-lm do the same); Gemma 2 and llama.cpp use the exact root.
    scale = math.sqrt(hidden)
    return {
        "norm_placement": "sandwich",
        "mlp_activation": "gelu_tanh",
        "embed_scale": bfloat16_round(scale) if rounded_scale else scale,
    }


# --- from a Hugging Face config.json ------------------------------------------------------------


def _hf_gemma2(cfg: dict) -> dict:
    n = cfg["num_hidden_layers"]
    return {
        **_gemma(cfg["hidden_size"], rounded_scale=False),
        "norm_weight_offset": 1.0,
        "attn_logit_softcap": cfg.get("attn_logit_softcapping", 50.0),
        "final_logit_softcap": cfg.get("final_logit_softcapping", 30.0),
        "query_pre_attn_scalar": cfg.get("query_pre_attn_scalar", 256),
        "sliding_window": cfg.get("sliding_window", 4096),
        "sliding_layers": _hf_sliding_layers(cfg, n, every=2),
        "tie_word_embeddings": cfg.get("tie_word_embeddings", True),
    }


def _hf_gemma3(cfg: dict) -> dict:
    n = cfg["num_hidden_layers"]
    return {
        **_gemma(cfg["hidden_size"], rounded_scale=True),
        "qk_norm": "head",
        "norm_weight_offset": 1.0,
        "final_logit_softcap": cfg.get("final_logit_softcapping"),
        "attn_logit_softcap": cfg.get("attn_logit_softcapping"),
        "query_pre_attn_scalar": cfg.get("query_pre_attn_scalar", 256),
        "sliding_window": cfg.get("sliding_window", 4096),
        "sliding_layers": _hf_sliding_layers(cfg, n, every=cfg.get("sliding_window_pattern", 6)),
        "rope_local_theta": cfg.get("rope_local_base_freq", 10000.0),
        "tie_word_embeddings": cfg.get("tie_word_embeddings", True),
    }


def _hf_sliding_layers(cfg: dict, n_layers: int, every: int) -> tuple[int, ...]:
    """Newer configs list every layer's kind; older ones give the period."""
    kinds = cfg.get("layer_types")
    if kinds:
        return tuple(i for i, kind in enumerate(kinds) if kind == "sliding_attention")
    return _pattern(n_layers, every)


def _hf_phi3(cfg: dict) -> dict:
    # Phi-3's configs name a sliding window, but mlx-lm and llama.cpp both attend globally
    # (llama.cpp turned it off: the converted models were worse with it); we do the same.
    return {
        "fused_checkpoint": True,
        "partial_rotary_factor": cfg.get("partial_rotary_factor", 1.0),
        "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"],
        "original_max_position_embeddings": cfg.get("original_max_position_embeddings"),
    }


def _hf_smollm3(cfg: dict) -> dict:
    n = cfg["num_hidden_layers"]
    uses_rope = cfg.get("no_rope_layers")  # despite the name: 1 where the layer uses RoPE
    if uses_rope is None:
        every = cfg.get("no_rope_layer_interval", 4)
        uses_rope = [int((i + 1) % every != 0) for i in range(n)]
    return {"no_rope_layers": tuple(i for i, use in enumerate(uses_rope) if not use)}


HF_SWITCHES: dict[str, Callable[[dict], dict]] = {
    "llama": lambda cfg: {},
    "mistral": lambda cfg: {},
    "qwen2": lambda cfg: {"attention_bias": cfg.get("attention_bias", True)},
    "qwen3": lambda cfg: {"qk_norm": "head", "attention_bias": cfg.get("attention_bias", False)},
    "gemma2": _hf_gemma2,
    "gemma3_text": _hf_gemma3,
    "phi3": _hf_phi3,
    "smollm3": _hf_smollm3,
    "olmo2": lambda cfg: {"qk_norm": "all", "norm_placement": "post"},
}


# --- from GGUF metadata (llama.cpp's keys, and its defaults where a key is optional) -----------------


def _gguf_gemma2(get: Callable, hidden: int, heads: int, n_layers: int, head_dim: int) -> dict:
    return {
        **_gemma(hidden, rounded_scale=False),
        "attn_logit_softcap": float(get("attn_logit_softcapping", 50.0)),
        "final_logit_softcap": float(get("final_logit_softcapping", 30.0)),
        "query_pre_attn_scalar": _gguf_query_scalar(n_layers == 46, hidden, heads, head_dim),
        "sliding_window": int(get("attention.sliding_window", 4096)),
        "sliding_layers": _pattern(n_layers, 2),
    }


def _gguf_gemma3(get: Callable, hidden: int, heads: int, n_layers: int, head_dim: int) -> dict:
    window = int(get("attention.sliding_window", 0))
    softcap = get("final_logit_softcapping", 0.0)
    return {
        **_gemma(hidden, rounded_scale=True),
        "qk_norm": "head",
        "final_logit_softcap": float(softcap) or None,
        "query_pre_attn_scalar": _gguf_query_scalar(n_layers == 62, hidden, heads, head_dim),
        "sliding_window": window or None,
        "sliding_layers": _pattern(n_layers, 6) if window else (),
        "rope_local_theta": float(get("rope.freq_base_swa", 10000.0)),  # llama.cpp's fixed local base
    }


def _gguf_query_scalar(is_27b: bool, hidden: int, heads: int, head_dim: int) -> float:
    # GGUF does not store query_pre_attn_scalar; llama.cpp derives it from the size, as Google's
    # reference code does: the 27B models scale by hidden/heads, the others by the head size.
    return hidden / heads if is_27b else head_dim


def _gguf_phi3(get: Callable, hidden: int, heads: int, n_layers: int, head_dim: int) -> dict:
    rotary = int(get("rope.dimension_count", head_dim))
    return {
        "fused_checkpoint": True,
        "partial_rotary_factor": rotary / head_dim,
        "original_max_position_embeddings": get("rope.scaling.original_context_length", None),
    }


def _gguf_smollm3(get: Callable, hidden: int, heads: int, n_layers: int, head_dim: int) -> dict:
    # llama.cpp has no key for it: every fourth layer, as in every SmolLM3 release.
    return {"no_rope_layers": tuple(i for i in range(n_layers) if (i + 1) % 4 == 0)}


GGUF_SWITCHES: dict[str, Callable[..., dict]] = {
    "llama": lambda *_: {},
    "qwen2": lambda *_: {},
    "qwen3": lambda *_: {"qk_norm": "head"},
    "gemma2": _gguf_gemma2,
    "gemma3": _gguf_gemma3,
    "phi3": _gguf_phi3,
    "smollm3": _gguf_smollm3,
    "olmo2": lambda *_: {"qk_norm": "all", "norm_placement": "post"},
}


# --- what we do not run ---------------------------------------------------------------------------

_MOE_TYPES = {
    "mixtral", "qwen2_moe", "qwen3_moe", "qwen3_5_moe", "deepseek", "deepseek_v2", "deepseek_v3", "phimoe",
    "olmoe", "granitemoe", "dbrx", "gpt_oss", "llama4", "glm4_moe", "minimax", "ernie4_5_moe", "dots1",
    "bailing_moe", "hunyuan", "arctic", "jetmoe", "qwen2moe", "qwen3moe", "deepseek2", "gpt-oss",
}  # fmt: skip
_HYBRID_TYPES = {
    "qwen3_next", "qwen3_5", "falcon_h1", "jamba", "mamba", "mamba2", "rwkv", "rwkv6", "rwkv7", "recurrent_gemma",
    "lfm2", "granitemoehybrid", "nemotron_h", "kimi_linear", "zamba", "zamba2", "plamo2", "qwen3next",
    "falcon-h1", "bailing_hybrid", "olmo_hybrid",
}  # fmt: skip
_VISION_TYPES = {
    "llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "mllama", "pixtral", "mistral3", "idefics3",
    "smolvlm", "paligemma", "gemma3", "gemma3n", "gemma4", "kimi_vl", "clip", "internvl_chat",
}  # fmt: skip


def _kind(name: str, cfg: dict) -> Optional[str]:
    """Why a family is not a dense decoder-only transformer, judged by its name or its config keys."""
    if name in _VISION_TYPES or "vision_config" in cfg or "vision_tower" in cfg:
        return "vision-language"
    if name in _HYBRID_TYPES or any(k in cfg for k in ("ssm_cfg", "state_size", "linear_num_value_heads")):
        return "hybrid linear-attention or state-space"
    experts = [cfg.get(k) for k in ("num_experts", "num_local_experts", "n_routed_experts", "expert_count")]
    if name in _MOE_TYPES or any(experts):
        return "mixture-of-experts"
    return None


def _refuse(name: str, what: Optional[str], runs: list[str]) -> ModelError:
    kind = f" ({what})" if what else ""
    return ModelError(f"Unsupported architecture '{name}'{kind}: glasschat runs {', '.join(runs)}.")


def check_hf(model_type: str, cfg: dict[str, Any]) -> None:
    # A family we run can still carry experts or a vision tower in its config: judge by the keys too.
    what = _kind("" if model_type in HF_SWITCHES else model_type, cfg)
    if model_type not in HF_SWITCHES or what is not None:
        raise _refuse(model_type, what, list(HF_FAMILIES))


def check_gguf(arch: str, meta: dict[str, Any]) -> None:
    keys = {k[len(arch) + 1 :]: v for k, v in meta.items() if k.startswith(f"{arch}.")}
    expert_count = keys.get("expert_count")
    moe = expert_count is not None and int(expert_count.item() if hasattr(expert_count, "item") else expert_count)
    hybrid = any(k.startswith(("ssm.", "wkv.", "shortconv.")) for k in keys)
    if arch not in GGUF_SWITCHES or moe or hybrid:
        what = "mixture-of-experts" if moe else "hybrid linear-attention or state-space" if hybrid else None
        what = what or _kind(arch, {})
        if arch == "clip":
            what = "a vision projector (mmproj), not a language model"
        raise _refuse(arch, what, list(GGUF_SWITCHES))
