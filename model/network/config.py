"""The model's shape and its family's switches: one frozen dataclass the network is built from.

It lives with the network (which needs it to build every layer); `model.loading.config`
fills it from GGUF metadata or a Hugging Face `config.json`.
"""

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class ModelConfig:
    architecture: str  # checkpoint family (Hugging Face model_type); `families` sets the switches below
    hidden_size: int  # width of the residual stream
    num_hidden_layers: int  # transformer blocks
    num_attention_heads: int  # query heads
    num_key_value_heads: int  # fewer than query heads means grouped-query attention
    head_dim: int  # usually hidden_size // heads; Mistral, Qwen3 and Gemma configs may say otherwise
    intermediate_size: int  # MLP hidden width
    vocab_size: int  # rows of the embedding table
    rms_norm_eps: float = 1e-5  # numerical floor inside RMSNorm
    rope_theta: float = 10000.0  # RoPE base: larger bases reach longer contexts
    rope_traditional: bool = False  # GGUF's llama converter interleaves q/k rows, so True there
    rope_scaling: Optional[dict] = field(default=None, compare=False)  # Llama 3's rule, linear, Phi-3's longrope
    max_position_embeddings: int = 4096  # trained context; the cache never places RoPE past it
    tie_word_embeddings: bool = False  # SmolLM2 and Gemma read logits through the embedding table
    attention_bias: bool = False  # Qwen2 adds biases to q, k and v

    # Family switches. The defaults are Llama's; each names the families that change it.
    qk_norm: Optional[str] = None  # RMSNorm on q and k: "head" per head (Qwen3, Gemma 3), "all" across heads (OLMo 2)
    norm_placement: str = (
        "pre"  # RMSNorm "pre" each sub-block (Llama), "sandwich" before and after (Gemma 2/3), "post" (OLMo 2)
    )
    mlp_activation: str = "silu"  # the gate's activation: "gelu_tanh" is GeGLU with tanh-approximate GELU (Gemma)
    embed_scale: float = 1.0  # embeddings times sqrt(hidden_size) (Gemma)
    norm_weight_offset: float = 0.0  # 1.0: RMSNorm scales by (1 + w), as Gemma's folders store it; folded in at load
    attn_logit_softcap: Optional[float] = None  # scores -> cap * tanh(scores / cap) before the softmax (Gemma 2)
    final_logit_softcap: Optional[float] = None  # logits capped the same way (Gemma 2)
    query_pre_attn_scalar: Optional[float] = None  # scores scaled by this ** -0.5, not head_dim ** -0.5 (Gemma)
    sliding_window: Optional[int] = None  # windowed layers see only the latest this-many tokens (Gemma 2/3)
    sliding_layers: tuple[int, ...] = ()  # which layers are windowed (Gemma 2: every other; Gemma 3: five in six)
    rope_local_theta: Optional[float] = None  # the windowed layers' own RoPE base (Gemma 3)
    no_rope_layers: tuple[int, ...] = ()  # layers whose q and k get no RoPE at all (SmolLM3: every fourth)
    fused_checkpoint: bool = False  # q/k/v stored as one matrix and gate/up as another (Phi-3)
    partial_rotary_factor: float = 1.0  # RoPE turns only this share of each head (Phi-4-mini: 0.75)
    original_max_position_embeddings: Optional[int] = None  # context before longrope stretched it (Phi-3)

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def rotary_dims(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def query_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5
