"""The model's shape, read from GGUF metadata or a Hugging Face `config.json`."""

from dataclasses import dataclass, field
from typing import Any, Optional

from model.errors import ModelError

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")


@dataclass(frozen=True)
class ModelConfig:
    architecture: str  # checkpoint family; decides q/k/v biases and the RoPE layout
    hidden_size: int  # width of the residual stream
    num_hidden_layers: int  # transformer blocks
    num_attention_heads: int  # query heads
    num_key_value_heads: int  # fewer than query heads means grouped-query attention
    head_dim: int  # usually hidden_size // heads; Mistral-family configs may say otherwise
    intermediate_size: int  # SwiGLU hidden width
    vocab_size: int  # rows of the embedding table
    rms_norm_eps: float = 1e-5  # numerical floor inside RMSNorm
    rope_theta: float = 10000.0  # RoPE base: larger bases reach longer contexts
    rope_traditional: bool = False  # GGUF's llama converter interleaves q/k rows, so True there
    rope_scaling: Optional[dict] = field(default=None, compare=False)  # Llama 3's long-context rule
    max_position_embeddings: int = 4096  # trained context; the cache never places RoPE past it
    tie_word_embeddings: bool = False  # SmolLM2 reads logits through the embedding table
    attention_bias: bool = False  # Qwen2 adds biases to q, k and v

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim


def _check_architecture(name: str) -> str:
    if name not in SUPPORTED_ARCHITECTURES:
        raise ModelError(
            f"Unsupported architecture '{name}': glasschat runs Llama-family models "
            f"({', '.join(SUPPORTED_ARCHITECTURES)}); pick one of those."
        )
    return name


def config_from_hf(cfg: dict[str, Any]) -> ModelConfig:
    """Build from `config.json`, as written by transformers or mlx-lm; unknown keys are dropped."""
    arch = _check_architecture(cfg.get("model_type", "?"))
    heads = cfg["num_attention_heads"]
    hidden = cfg["hidden_size"]
    return ModelConfig(
        architecture=arch,
        hidden_size=hidden,
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or hidden // heads,
        intermediate_size=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"],
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        rope_theta=cfg.get("rope_theta", 10000.0),
        rope_traditional=cfg.get("rope_traditional", False),
        rope_scaling=cfg.get("rope_scaling"),
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        attention_bias=cfg.get("attention_bias", arch == "qwen2"),
    )


def config_from_gguf(meta: dict[str, Any], tensor_names: set[str]) -> ModelConfig:
    """Build from GGUF metadata; `tensor_names` tells whether the head is tied."""
    arch = _check_architecture(str(meta.get("general.architecture", "?")))

    def get(key, default=None):
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise ModelError(f"The GGUF file lacks '{arch}.{key}': it is incomplete; re-download it.")
        return value.item() if hasattr(value, "item") else value

    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    vocab = meta.get(f"{arch}.vocab_size")
    if vocab is None:
        vocab = len(meta["tokenizer.ggml.tokens"])
    return ModelConfig(
        architecture=arch,
        hidden_size=hidden,
        num_hidden_layers=int(get("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(get("attention.head_count_kv", heads)),
        head_dim=int(get("attention.key_length", hidden // heads)),
        intermediate_size=int(get("feed_forward_length")),
        vocab_size=int(vocab.item() if hasattr(vocab, "item") else vocab),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        # llama.cpp's converter permutes q and k for the llama family only;
        # Qwen2 is stored as-is and uses the NeoX (non-interleaved) layout.
        rope_traditional=arch in ("llama", "mistral"),
        max_position_embeddings=int(get("context_length", 4096)),
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
    )
