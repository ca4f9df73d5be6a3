"""The model's shape and its family's switches (`ModelConfig`), read from GGUF metadata or a Hugging Face `config.json`."""

from typing import Any, Optional

from model.errors import ModelError
from model.loading import families
from model.network.config import ModelConfig

SUPPORTED_ARCHITECTURES = families.HF_FAMILIES


def _rope_from_hf(cfg: dict[str, Any]) -> tuple[float, Optional[dict]]:
    """RoPE base and scaling; transformers 5 nests both under `rope_parameters`."""
    params = cfg.get("rope_parameters") or {}
    theta = cfg.get("rope_theta", params.get("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling")
    if scaling is None and params.get("rope_type", "default") != "default":
        scaling = params
    return theta, scaling


def config_from_hf(cfg: dict[str, Any]) -> ModelConfig:
    """Build from `config.json`, as written by transformers or mlx-lm; unknown keys are dropped."""
    arch = cfg.get("model_type", "?")
    families.check_hf(arch, cfg)
    heads = cfg["num_attention_heads"]
    hidden = cfg["hidden_size"]
    theta, scaling = _rope_from_hf(cfg)
    base = dict(
        architecture=arch,
        hidden_size=hidden,
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or hidden // heads,
        intermediate_size=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"],
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        rope_theta=theta,
        rope_traditional=cfg.get("rope_traditional", False),
        rope_scaling=scaling,
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
    )
    return ModelConfig(**{**base, **families.HF_SWITCHES[arch](cfg)})


def config_from_gguf(meta: dict[str, Any], tensor_names: set[str]) -> ModelConfig:
    """Build from GGUF metadata; `tensor_names` tells whether the head is tied and which extras exist."""
    arch = str(meta.get("general.architecture", "?"))
    families.check_gguf(arch, meta)
    missing = object()

    def get(key, default=missing):
        value = meta.get(f"{arch}.{key}", default)
        if value is missing:
            raise ModelError(f"The GGUF file lacks '{arch}.{key}': it is incomplete; re-download it.")
        return value.item() if hasattr(value, "item") else value

    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    n_layers = int(get("block_count"))
    head_dim = int(get("attention.key_length", hidden // heads))
    vocab = meta.get(f"{arch}.vocab_size")
    if vocab is None:
        vocab = len(meta["tokenizer.ggml.tokens"])
    family = families.GGUF_FAMILIES[arch]
    base = dict(
        architecture=family,
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=int(get("attention.head_count_kv", heads)),
        head_dim=head_dim,
        intermediate_size=int(get("feed_forward_length")),
        vocab_size=int(vocab.item() if hasattr(vocab, "item") else vocab),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=_rope_from_gguf(get, tensor_names),
        # llama.cpp's converter permutes q and k rows for the llama family only (and
        # SmolLM3, converted as llama); the others are stored as-is, NeoX layout.
        rope_traditional=arch in ("llama", "smollm3"),
        max_position_embeddings=int(get("context_length", 4096)),
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
    )
    return ModelConfig(**{**base, **families.GGUF_SWITCHES[arch](get, hidden, heads, n_layers, head_dim)})


def _rope_from_gguf(get, tensor_names: set[str]) -> Optional[dict]:
    """Linear scaling from the metadata; Phi-3's longrope factors come as tensors (applied at load)."""
    if "rope_factors_long.weight" in tensor_names:
        return {"rope_type": "longrope", "attn_factor": float(get("rope.scaling.attn_factor", 1.0))}
    kind = get("rope.scaling.type", None)
    factor = float(get("rope.scaling.factor", 0.0) or 0.0)
    if kind == "linear" and factor > 0 and factor != 1.0:
        return {"rope_type": "linear", "factor": factor}
    return None
