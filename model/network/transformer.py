"""The transformer: embed, blocks, norm, head; one model, each family a set of switches (see `ModelConfig`).

Module names follow the Hugging Face checkpoint keys, so loading a checkpoint is
a rename at most. The model holds no state: the KV cache is passed in.
"""

from dataclasses import replace
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from model.kernels import fused_step
from model.network.attention import attend, geglu, swiglu, window_mask
from model.network.config import ModelConfig
from model.network.probe import AttentionSeen, Probe, Recorder
from model.network.rope import RoPE
from model.network.step_cache import StepCache


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm; one graph node on the CPU where the kernel extension is built (see fused_step)."""

    def __call__(self, x: mx.array) -> mx.array:
        y = fused_step.rms_norm(x, self["weight"], self.eps)
        return super().__call__(x) if y is None else y


def rms_norm(config: ModelConfig, dims: Optional[int] = None) -> nn.RMSNorm:
    return RMSNorm(dims or config.hidden_size, eps=config.rms_norm_eps)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = config.query_scale
        self.softcap = config.attn_logit_softcap
        self.make_projections(config)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=False)
        self.qk_norm = config.qk_norm
        if self.qk_norm == "head":
            self.q_norm, self.k_norm = rms_norm(config, self.head_dim), rms_norm(config, self.head_dim)
        elif self.qk_norm == "all":
            self.q_norm = rms_norm(config, self.n_heads * self.head_dim)
            self.k_norm = rms_norm(config, self.n_kv_heads * self.head_dim)

    def make_projections(self, config: ModelConfig) -> None:
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)

    def project(self, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """q, k and v for x, before RoPE."""
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def __call__(
        self,
        x,
        rope: Optional[RoPE],
        offset: int,
        mask,
        layer_cache,
        record: Optional[Recorder] = None,
        residual: Optional[mx.array] = None,
    ) -> mx.array:
        """Attention's output projection, plus `residual` when given (the block's stream, added in one node
        where the kernel can)."""
        B, L, _ = x.shape
        q, k, v = self.heads(x, rope, offset)
        # The cache stores the new k and v and returns every key and value the
        # new queries may see (plain or quantized); attention runs over those.
        keys, values = (k, v) if layer_cache is None else layer_cache.update_and_fetch(k, v)
        out = attend(q, keys, values, self.scale, mask, self.softcap)  # (B, nh, L, hd)
        if record is not None:
            record(AttentionSeen(q, k, v, keys, values, self.scale, out, self.softcap))
        out = out.transpose(0, 2, 1, 3).reshape(B, L, -1)
        return self.o_proj(out) if residual is None else fused_step.linear_plus(self.o_proj, out, residual)

    def heads(self, x: mx.array, rope: Optional[RoPE], offset: int) -> tuple[mx.array, mx.array, mx.array]:
        """q (B, nh, L, hd), k and v (B, nkv, L, hd) for x, q and k turned by RoPE."""
        B, L, _ = x.shape
        q, k, v = self.project(x)
        if self.qk_norm == "all":  # OLMo 2 normalises q and k across all heads at once
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.reshape(B, L, self.n_heads, -1)
        k = k.reshape(B, L, self.n_kv_heads, -1)
        if self.qk_norm == "head":  # Qwen3 and Gemma 3, each head on its own
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.transpose(0, 2, 1, 3)  # (B, nh, L, hd)
        k = k.transpose(0, 2, 1, 3)  # (B, nkv, L, hd)
        v = v.reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        if rope is not None:  # SmolLM3's layers without RoPE see positions only through the mask
            q = rope(q, offset)
            k = rope(k, offset)
        return q, k, v


class FusedAttention(Attention):
    """q, k and v from one GEMM: a decode step is a chain of small matrix-vector products,
    and fewer, larger ones cost fewer dispatches (see model.loading.fusion). Phi-3 stores them so."""

    def make_projections(self, config: ModelConfig) -> None:
        out = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, out, bias=config.attention_bias)
        self.q_end = self.n_heads * self.head_dim  # where the fused output's k part starts
        self.k_end = self.q_end + self.n_kv_heads * self.head_dim

    def project(self, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        return tuple(mx.split(self.qkv_proj(x), [self.q_end, self.k_end], axis=-1))

    def heads(self, x: mx.array, rope: Optional[RoPE], offset: int) -> tuple[mx.array, mx.array, mx.array]:
        # A decode step's split into heads and RoPE as one node where the kernel extension can
        # (no q/k norm, a plain table rotation); otherwise the ops written out above.
        if self.qk_norm is None and rope is not None and rope.mscale == 1.0 and x.shape[1] <= fused_step.FUSED_ROWS:
            tables = rope.tables(offset + x.shape[1])
            fused = fused_step.rope_heads(
                self.qkv_proj(x), tables, offset, self.n_heads, self.n_kv_heads, self.head_dim, rope
            )
            if fused is not None:
                return tuple(fused)
        return super().heads(x, rope, offset)


class MLP(nn.Module):
    """A gated MLP: down(act(gate(x)) * up(x)); act is SiLU (SwiGLU) or, for Gemma, tanh-GELU (GeGLU)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.make_projections(config)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.gated = geglu if config.mlp_activation == "gelu_tanh" else swiglu

    def make_projections(self, config: ModelConfig) -> None:
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)

    def gate_and_up(self, x: mx.array) -> tuple[mx.array, mx.array]:
        return self.gate_proj(x), self.up_proj(x)

    def __call__(self, x, residual: Optional[mx.array] = None) -> mx.array:
        """down(act(gate(x)) * up(x)), plus `residual` when given (in one node where the kernel can)."""
        y = self.down_proj(self.gated(*self.gate_and_up(x)))
        return y if residual is None else y + residual


class FusedMLP(MLP):
    """gate and up from one GEMM (as Phi-3 checkpoints store them)."""

    def make_projections(self, config: ModelConfig) -> None:
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)

    def gate_and_up(self, x: mx.array) -> tuple[mx.array, mx.array]:
        return tuple(mx.split(self.gate_up_proj(x), 2, axis=-1))

    def __call__(self, x, residual: Optional[mx.array] = None) -> mx.array:
        # SwiGLU's gate, the down projection and the residual add as one kernel node where it can.
        if self.gated is swiglu:
            y = fused_step.swiglu_linear_plus(self.down_proj, self.gate_up_proj(x), residual)
            if y is not None:
                return y
        return super().__call__(x, residual)


class Block(nn.Module):
    """Attention, then the MLP, each added back to the residual stream; where the norms sit is a switch.

    Norm names follow the checkpoints, and so shift meaning: in Llama `post_attention_layernorm`
    normalises the MLP's input; in Gemma and OLMo 2 it normalises attention's output."""

    def __init__(self, config: ModelConfig, fused: bool = False):
        super().__init__()
        self.self_attn = (FusedAttention if fused else Attention)(config)
        self.mlp = (FusedMLP if fused else MLP)(config)
        self.placement = config.norm_placement
        if self.placement != "post":
            self.input_layernorm = rms_norm(config)
        self.post_attention_layernorm = rms_norm(config)
        if self.placement == "sandwich":
            self.pre_feedforward_layernorm = rms_norm(config)
        if self.placement != "pre":
            self.post_feedforward_layernorm = rms_norm(config)

    def __call__(self, x, rope, offset, mask, layer_cache, record: Optional[Recorder] = None) -> mx.array:
        if self.placement == "pre":  # Llama, Qwen, Phi-3, SmolLM3: normalise what each sub-block reads
            h = self.self_attn(self.input_layernorm(x), rope, offset, mask, layer_cache, record, residual=x)
            return self.mlp(self.post_attention_layernorm(h), residual=h)
        if self.placement == "sandwich":  # Gemma 2/3: normalise what it reads and what it adds
            a = self.self_attn(self.input_layernorm(x), rope, offset, mask, layer_cache, record)
            h = x + self.post_attention_layernorm(a)
            return h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))
        # "post", OLMo 2: normalise only what it adds
        h = x + self.post_attention_layernorm(self.self_attn(x, rope, offset, mask, layer_cache, record))
        return h + self.post_feedforward_layernorm(self.mlp(h))


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig, fused: bool = False):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = [Block(config, fused) for _ in range(config.num_hidden_layers)]
        self.norm = rms_norm(config)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig, fused: bool = False):
        """`fused`: q/k/v and gate/up as one projection each; the loader decides from the weights."""
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, fused)
        self.rope = RoPE(config)
        if config.rope_local_theta is not None:  # Gemma 3's windowed layers: their own base, unscaled
            self.local_rope = RoPE(config, base=config.rope_local_theta, scaled=False)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.windowed = frozenset(config.sliding_layers if config.sliding_window else ())
        self.no_rope = frozenset(config.no_rope_layers)

    def layer_rope(self, i: int) -> Optional[RoPE]:
        if i in self.no_rope:
            return None
        if i in self.windowed and "local_rope" in self:
            return self.local_rope
        return self.rope

    def key_shifts(self) -> list:
        """Each layer's way to move cached keys by a number of positions (None: no RoPE, nothing to move)."""
        return [None if rope is None else rope.shift for rope in map(self.layer_rope, range(len(self.model.layers)))]

    def hidden_states(
        self, tokens: mx.array, cache: Optional[StepCache] = None, probe: Optional[Probe] = None
    ) -> mx.array:
        """Embed and run every block; returns the residual stream before the final norm.

        A `probe` records what it asks for on the way (see model.network.probe)."""
        return self.blocks(self.embed(tokens), cache, probe)

    def embed(self, tokens: mx.array) -> mx.array:
        h = self.model.embed_tokens(tokens)  # (B, L, d)
        if self.config.embed_scale != 1.0:  # Gemma: sqrt(d), so embeddings match the stream's scale
            h = h * self.config.embed_scale
        return h

    def blocks(self, h: mx.array, cache: Optional[StepCache] = None, probe: Optional[Probe] = None) -> mx.array:
        """Run every block over the residual stream h (B, L, d); a pipeline stage starts here with what it received."""
        L = h.shape[1]
        # The cache makes room first (evicting if full), so the new tokens'
        # positions are known before RoPE is applied.
        offset = cache.begin(L) if cache is not None else 0
        mask = "causal" if L > 1 else None
        local_mask = mask
        if self.windowed:  # Gemma's windowed layers see only the latest sliding_window tokens
            local_mask = cache.window_mask(L) if cache is not None else window_mask(0, L, self.config.sliding_window)
        for i, layer in enumerate(self.model.layers):
            layer_cache = cache.layers[i] if cache is not None else None
            record = probe.attention_recorder(i) if probe is not None else None
            layer_mask = local_mask if i in self.windowed else mask
            h = layer(h, self.layer_rope(i), offset, layer_mask, layer_cache, record)
            if probe is not None:
                probe.block_output(h)
        if cache is not None:
            cache.commit(L)
        return h

    def keep_layers(self, layers: range) -> None:
        """Keep only the blocks in `layers` (a pipeline stage), renumbered from 0 with their per-layer switches.

        The config then describes the stage, so a KV cache made for it holds these layers only."""
        c = self.config

        def local(ids: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(i - layers.start for i in ids if i in layers)

        self.config = replace(
            c,
            num_hidden_layers=len(layers),
            sliding_layers=local(c.sliding_layers),
            no_rope_layers=local(c.no_rope_layers),
        )
        self.model.layers = self.model.layers[layers.start : layers.stop]
        self.windowed = frozenset(self.config.sliding_layers if c.sliding_window else ())
        self.no_rope = frozenset(self.config.no_rope_layers)

    def head(self, h: mx.array) -> mx.array:
        """Final norm, then the output head (the embedding table when tied), soft-capped for Gemma 2."""
        h = self.model.norm(h)
        if self.config.tie_word_embeddings:
            logits = self.model.embed_tokens.as_linear(h)
        else:
            logits = self.lm_head(h)
        cap = self.config.final_logit_softcap
        return logits if cap is None else mx.tanh(logits / cap) * cap

    def __call__(
        self,
        tokens: mx.array,
        cache: Optional[StepCache] = None,
        last_only: bool = False,
        probe: Optional[Probe] = None,
    ) -> mx.array:
        """Logits (B, L, vocab), or (B, 1, vocab) with `last_only` (prefill needs just the last)."""
        h = self.hidden_states(tokens, cache, probe)
        if last_only:
            h = h[:, -1:, :]
        return self.head(h)


def parameter_count(model: Transformer) -> int:
    config = model.config
    d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    attn = d * config.num_attention_heads * config.head_dim * 2 + d * config.kv_dim * 2
    norms = {"pre": 2, "post": 2, "sandwich": 4}[config.norm_placement] * d
    if config.qk_norm == "head":
        norms += 2 * config.head_dim
    elif config.qk_norm == "all":
        norms += (config.num_attention_heads * config.head_dim) + config.kv_dim
    per_layer = attn + 3 * d * f + norms
    head = 0 if config.tie_word_embeddings else d * v
    return v * d + config.num_hidden_layers * per_layer + d + head
