"""Tiny random checkpoints of every family we run, made by someone else's code.

Each is built with mlx-lm's own model class for its `model_type` (the parameter
names and shapes are mlx-lm's, not ours), given random weights, and written as a
Hugging Face folder: config.json, model.safetensors, the small byte-level BPE
tokenizer.json and ChatML template of `tiny_models`. `write_gguf` then writes the same weights
as llama.cpp's converter would: tensor names from the `gguf` package's own name
map, llama.cpp's metadata keys, the q/k row permutation for the llama-type
architectures, Gemma's norms stored as 1 + w, Phi-3's RoPE factors as tensors.
"""

import json
import math
from pathlib import Path

import mlx.core as mx
import numpy as np
from tiny_models import CHAT_SPECIALS, CHATML, tiny_tokenizer_json

_BASE = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,  # a quantization group, so --kv-bits runs on every family
    "intermediate_size": 192,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}

FAMILIES = {
    # Per-head q/k norms, a head size that is not hidden/heads, tied head.
    "qwen3": {"model_type": "qwen3", "hidden_size": 96, "rope_theta": 1000000.0, "tie_word_embeddings": True},
    # Norms around both sub-blocks, GeGLU, sqrt(d) embedding scale, soft-capping, every other layer windowed.
    "gemma2": {
        "model_type": "gemma2",
        "hidden_size": 96,  # sqrt(96) is not a round number
        "query_pre_attn_scalar": 32,
        "attn_logit_softcapping": 10.0,  # low enough to bend these random scores
        "final_logit_softcapping": 8.0,
        "sliding_window": 4096,  # mlx-lm's gemma2 attends globally; longer than any test here
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    },
    # q/k norms, windowed layers (five in six, which llama.cpp assumes for every Gemma 3) with their own RoPE base.
    "gemma3_text": {
        "model_type": "gemma3_text",
        "hidden_size": 96,  # sqrt(96) = 9.798 becomes 9.8125 in bfloat16
        "num_hidden_layers": 6,
        "query_pre_attn_scalar": 32,
        "sliding_window": 512,
        "sliding_window_pattern": 6,
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "tie_word_embeddings": True,
    },
    # Fused q/k/v and gate/up, partial rotary (Phi-4-mini's 3/4) and longrope scaling.
    "phi3": {
        "model_type": "phi3",
        "partial_rotary_factor": 0.75,
        "rope_theta": 10000.0,
        "original_max_position_embeddings": 64,
        "rope_scaling": {"type": "longrope"},  # factors filled in below (one per rotated pair)
    },
    # No RoPE on every fourth layer.
    "smollm3": {
        "model_type": "smollm3",
        "rope_theta": 5000000.0,
        "no_rope_layer_interval": 4,
        "tie_word_embeddings": True,
    },
    # Norms after each sub-block only, q/k norms across all heads.
    "olmo2": {"model_type": "olmo2", "rope_theta": 500000.0},
}

# Variants that GGUF cannot express, tested from folders only.
FOLDER_ONLY = {
    # Gemma 2 27B's rule: scores scaled by (hidden/heads) ** -0.5, not the head size's.
    "gemma2_27b_scalar": {**FAMILIES["gemma2"], "query_pre_attn_scalar": 24},
}


def tiny_vocab_size() -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tiny_tokenizer_json()).get_vocab_size(with_added_tokens=True)


def family_config(name: str) -> dict:
    spec = {**FAMILIES, **FOLDER_ONLY}[name]
    config = {**_BASE, **spec}
    config["vocab_size"] = tiny_vocab_size()
    if config["model_type"] == "phi3":
        config.pop("head_dim")  # Phi-3 derives it from hidden / heads
        pairs = int(config["hidden_size"] // config["num_attention_heads"] * config["partial_rotary_factor"]) // 2
        rng = np.random.default_rng(7)
        config["rope_scaling"] = {
            "type": "longrope",
            "long_factor": (1.0 + 3.0 * rng.random(pairs)).round(4).tolist(),
            "short_factor": (1.0 + 0.5 * rng.random(pairs)).round(4).tolist(),
        }
    if config["model_type"] == "olmo2":
        config.pop("head_dim")
    return config


def mlx_lm_model(config: dict):
    """mlx-lm's own class for this model_type, with its own parameter names."""
    import importlib

    module = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    return module.Model(module.ModelArgs.from_dict(config))


def random_weights(config: dict, seed: int = 0) -> dict[str, mx.array]:
    from mlx.utils import tree_flatten

    gemma = config["model_type"].startswith("gemma")
    params = dict(tree_flatten(mlx_lm_model(config).parameters()))
    if config.get("tie_word_embeddings"):
        params.pop("lm_head.weight", None)  # Gemma 3's class always has one; a tied checkpoint does not
    key = mx.random.key(seed)
    weights = {}
    for name, value in sorted(params.items()):
        key, sub = mx.random.split(key)
        noise = mx.random.normal(value.shape, key=sub)
        if name.endswith("norm.weight"):
            # Gemma stores w where the norm scales by 1 + w.
            weights[name] = 0.1 * noise if gemma else 1.0 + 0.1 * noise
        else:
            weights[name] = 0.2 * noise
    return weights


def write_folder(folder: Path, name: str, seed: int = 0, **overrides) -> dict:
    config = {**family_config(name), **overrides}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    mx.save_safetensors(str(folder / "model.safetensors"), random_weights(config, seed))
    (folder / "tokenizer.json").write_text(tiny_tokenizer_json())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": CHATML, "bos_token": None, "eos_token": "<|im_end|>"})
    )
    return config


# --- the same checkpoint as llama.cpp's convert_hf_to_gguf.py writes it ---------------------------

GGUF_ARCH = {
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
    "smollm3": "smollm3",
    "olmo2": "olmo2",
    "llama": "llama",
}
_PERMUTED = {"llama", "smollm3"}  # converted by llama.cpp's LlamaModel, which interleaves q/k rows


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: each head's two rotary halves interleaved row by row."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(folder: Path, path: Path) -> Path:
    import gguf

    config = json.loads((folder / "config.json").read_text())
    arch = GGUF_ARCH[config["model_type"]]
    n_layers = config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), n_layers)
    writer = gguf.GGUFWriter(str(path), arch)
    _metadata(writer, arch, config)
    _tokenizer(writer)

    for hf_name, value in mx.load(str(folder / "model.safetensors")).items():
        w = np.array(value.astype(mx.float32))
        if arch in _PERMUTED and hf_name.endswith("q_proj.weight"):
            w = _permute(w, heads)
        elif arch in _PERMUTED and hf_name.endswith("k_proj.weight"):
            w = _permute(w, kv_heads)
        if arch.startswith("gemma") and hf_name.endswith("norm.weight"):
            w = w + 1.0  # llama.cpp's Gemma converters store the norm's effective scale
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, hf_name
        writer.add_tensor(gguf_name, w)
    scaling = config.get("rope_scaling") or {}
    if scaling.get("type") == "longrope":
        writer.add_tensor("rope_factors_long.weight", np.array(scaling["long_factor"], np.float32))
        writer.add_tensor("rope_factors_short.weight", np.array(scaling["short_factor"], np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _metadata(writer, arch: str, config: dict) -> None:
    """The keys llama.cpp's converter writes for this architecture (and only what our loader may read)."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if "head_dim" in config:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch != "gemma2":  # Gemma 2's converter leaves the base at llama.cpp's default, 10000
        writer.add_rope_freq_base(config["rope_theta"])
    if arch in ("llama", "smollm3"):
        writer.add_vocab_size(config["vocab_size"])
        writer.add_rope_dimension_count(head_dim)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])
        writer.add_sliding_window(config["sliding_window"])
    if arch == "gemma3":
        writer.add_sliding_window(config["sliding_window"])
    if arch == "phi3":
        original = config["original_max_position_embeddings"]
        writer.add_rope_dimension_count(int(config["partial_rotary_factor"] * hidden) // heads)
        writer.add_uint32(f"{arch}.rope.scaling.original_context_length", original)
        scale = config["max_position_embeddings"] / original
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)))


def _tokenizer(writer) -> None:
    spec = json.loads(tiny_tokenizer_json())
    vocab = {**spec["model"]["vocab"], **{t["content"]: t["id"] for t in spec["added_tokens"]}}
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # llama.cpp's name for the GPT-2 split, which tokenizer.json uses
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([3 if tok in CHAT_SPECIALS else 1 for tok in tokens])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_chat_template(CHATML)
