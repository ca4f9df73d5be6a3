"""A float64 numpy Llama with a streaming KV cache, to check the MLX model and its cache against.

Written from the papers and the README's definitions, not from our code: nothing
here imports `model`. Weights come straight from the checkpoint (the tiny random
tensors, or the GGUF file dequantized with `mx.dequantize`), RoPE angles are
computed from the config's numbers, and the cache keeps every key *before* RoPE,
rotating it at use by its index among the kept tokens. So where our cache
re-rotates stored keys when it evicts (llama.cpp's K-shift), this one never
rotates a stored key at all: the two agree only if the shift is right.

Eviction follows the README ("The KV cache"): when a step would overflow, the
oldest block after the sink, a quarter of the window or the overflow if larger,
is dropped in one go.
"""

import math
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits


@dataclass(frozen=True)
class Spec:
    """The shape numbers a forward pass needs."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    periods: np.ndarray  # (head_dim / 2,): angle of pair i at position p is p / periods[i]
    traditional: bool  # pairs are (2i, 2i+1) (GGUF Llama) rather than (i, i + head_dim/2)
    tied: bool  # the head is the embedding table


def llama3_periods(dims: int, base: float, s: dict) -> np.ndarray:
    """Meta's Llama 3 rule: long wavelengths stretched by `factor`, short kept, the band between blended."""
    factor, low, high = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old = s.get("original_max_position_embeddings", 8192)
    freqs = base ** -(np.arange(0, dims, 2, dtype=np.float64) / dims)
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old / high:
            out.append(f)
        elif wavelen > old / low:
            out.append(f / factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return 1.0 / np.array(out)


def spec_from_hf(cfg: dict) -> Spec:
    heads = cfg["num_attention_heads"]
    dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    theta = cfg.get("rope_theta", 10000.0)
    scaling = cfg.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "llama3":
        periods = llama3_periods(dim, theta, scaling)
    else:
        periods = theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
        if kind == "linear":
            periods = periods * scaling["factor"]
    return Spec(
        layers=cfg["num_hidden_layers"],
        heads=heads,
        kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=dim,
        eps=cfg.get("rms_norm_eps", 1e-5),
        periods=periods,
        traditional=cfg.get("rope_traditional", False),
        tied=cfg.get("tie_word_embeddings", False),
    )


_GGUF = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def read_gguf(path) -> tuple[dict, Spec]:
    """A Llama GGUF's weights (Hugging Face names, float32) and shape, read with MLX's own GGUF reader."""
    import mlx.core as mx

    tensors, meta = mx.load(str(path), return_metadata=True)
    out = {}
    for name in tensors:
        stem, _, kind = name.rpartition(".")
        if kind != "weight":
            continue
        value = tensors[name]
        if f"{stem}.scales" in tensors:
            scales, biases = tensors[f"{stem}.scales"], tensors[f"{stem}.biases"]
            bits = value.shape[-1] * 32 // (scales.shape[-1] * 32)  # GGUF blocks hold 32 weights
            value = mx.dequantize(value, scales.astype(mx.float32), biases.astype(mx.float32), group_size=32, bits=bits)
        parts = stem.split(".")
        if parts[0] == "blk":
            key = f"model.layers.{parts[1]}.{_GGUF[parts[2]]}.weight"
        else:
            key = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}[
                stem
            ] + ".weight"
        out[key] = np.array(value.astype(mx.float32))
    arch = str(meta["general.architecture"])

    def num(key):
        return meta[f"{arch}.{key}"].item()

    heads, dim = int(num("attention.head_count")), int(num("rope.dimension_count"))
    spec = Spec(
        layers=int(num("block_count")),
        heads=heads,
        kv_heads=int(num("attention.head_count_kv")),
        head_dim=dim,
        eps=float(num("attention.layer_norm_rms_epsilon")),
        periods=float(num("rope.freq_base")) ** (np.arange(0, dim, 2, dtype=np.float64) / dim),
        traditional=True,  # llama.cpp's converter permutes q and k rows into interleaved pairs
        tied="lm_head.weight" not in out,
    )
    return out, spec


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x: np.ndarray, positions: np.ndarray, spec: Spec) -> np.ndarray:
    """Rotate x (..., n, head_dim) row t by positions[t]."""
    angles = positions.astype(np.float64)[:, None] / spec.periods[None, :]  # (n, dims/2)
    cos, sin = np.cos(angles), np.sin(angles)
    if spec.traditional:
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = np.split(x, 2, axis=-1)
    ra, rb = a * cos - b * sin, a * sin + b * cos
    if spec.traditional:
        return np.stack([ra, rb], axis=-1).reshape(x.shape)
    return np.concatenate([ra, rb], axis=-1)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Kept:
    """What a cache should hold: per layer, each kept token's key before RoPE and its value.

    Keys are kept unrotated and rotated only when read, to their index among the
    kept tokens: the README's promise is that index == RoPE position.
    """

    def __init__(self, spec: Spec, capacity: int, keep: int, evict_fraction: float = 0.25):
        self.spec, self.capacity, self.keep, self.fraction = spec, capacity, keep, evict_fraction
        empty = np.zeros((spec.kv_heads, 0, spec.head_dim))
        self.raw_keys = [empty] * spec.layers  # (kv_heads, n, head_dim) per layer
        self.values = [empty] * spec.layers
        self.tokens: list[int] = []
        self.moves = np.zeros(0, dtype=int)  # per kept token: evictions that slid it left
        self.evicted_total = 0

    @property
    def length(self) -> int:
        return len(self.tokens)

    def evict_for(self, n: int) -> int:
        """Make room for n tokens as the README says; returns how many were dropped."""
        overflow = self.length + n - self.capacity
        if overflow <= 0:
            return 0
        window = self.capacity - self.keep
        count = min(max(overflow, int(window * self.fraction)), self.length - self.keep)
        cut = slice(self.keep, self.keep + count)
        del self.tokens[cut]
        self.moves = np.concatenate([self.moves[: cut.start], self.moves[cut.stop :] + 1])
        for store in (self.raw_keys, self.values):
            for i, a in enumerate(store):
                store[i] = np.concatenate([a[:, : cut.start], a[:, cut.stop :]], axis=1)
        self.evicted_total += count
        return count

    def add_tokens(self, ids: list[int]) -> np.ndarray:
        """Reserve the next positions for `ids`; returns those positions."""
        start = self.length
        self.tokens.extend(ids)
        self.moves = np.concatenate([self.moves, np.zeros(len(ids), dtype=int)])
        return np.arange(start, start + len(ids))

    def add(self, layer: int, raw_keys: np.ndarray, values: np.ndarray) -> None:
        """One layer's unrotated keys and values for the tokens just added, (kv_heads, n, head_dim)."""
        self.raw_keys[layer] = np.concatenate([self.raw_keys[layer], raw_keys], axis=1)
        self.values[layer] = np.concatenate([self.values[layer], values], axis=1)

    def rollback(self, n: int) -> None:
        """Forget the last `n` tokens (an eviction they caused stays, as in the README's cache)."""
        del self.tokens[self.length - n :]
        self.moves = self.moves[: self.length]
        for store in (self.raw_keys, self.values):
            for i, a in enumerate(store):
                store[i] = a[:, : self.length]

    def keys(self, layer: int) -> np.ndarray:
        """The kept keys as they should be held: each rotated to its index among the kept tokens."""
        raw = self.raw_keys[layer]
        return rope(raw, np.arange(raw.shape[1]), self.spec)


@dataclass
class Fed:
    """What one forward pass computed for its new tokens."""

    hidden: list  # per layer: the block's output (n, hidden), the residual stream
    attention: list  # per layer: attention output before o_proj (heads, n, head_dim)
    final: np.ndarray  # the last block's output for the last token (hidden,)


class Reference:
    """The model in float64 over a `Kept` cache.

    Tokens fed between two evictions are computed in one batch when needed:
    causal attention makes that exactly what feeding them one by one gives, and
    a float64 pass over the default model's weights costs about the same for
    one token as for fifty.
    """

    def __init__(self, weights: dict, spec: Spec, capacity: int, keep: int, evict_fraction: float = 0.25):
        # float64 once, here: converting per call would cost more than the matmuls
        self.w = {name: value.astype(np.float64) for name, value in weights.items()}
        self.spec = spec
        self.kept = Kept(spec, capacity, keep, evict_fraction)
        self.pending: list[int] = []  # fed, not yet computed

    @property
    def evicted_total(self) -> int:
        return self.kept.evicted_total

    @property
    def length(self) -> int:
        return self.kept.length + len(self.pending)

    def feed(self, ids: list[int]) -> None:
        """A forward pass over `ids`, as the model's cache sees it (evicting first if they would overflow)."""
        if self.kept.length + len(self.pending) + len(ids) > self.kept.capacity:
            self.flush()  # these tokens saw the context before the eviction
        self.kept.evict_for(len(ids))
        self.pending.extend(ids)

    def rollback(self, n: int) -> None:
        dropped = min(n, len(self.pending))
        del self.pending[len(self.pending) - dropped :]
        if n > dropped:
            self.kept.rollback(n - dropped)

    def step(self, ids: list[int]) -> Fed:
        """Feed and compute now; returns what the pass computed for `ids` (and any pending before them)."""
        self.feed(ids)
        return self.flush()

    def _lin(self, name: str, x: np.ndarray) -> np.ndarray:
        out = x @ self.w[name + ".weight"].T
        bias = self.w.get(name + ".bias")
        return out if bias is None else out + bias

    def flush(self):
        """Compute the pending tokens; returns what the pass computed for them (None if none)."""
        if not self.pending:
            return None
        # One BLAS thread: numpy's OpenBLAS threads spin-wait, and beside MLX's own
        # on two busy cores a 2-thread float64 GEMM ran 20x slower than 1 thread.
        with threadpool_limits(1, user_api="blas"):
            return self._compute()

    def _compute(self) -> Fed:
        ids, self.pending = self.pending, []
        s, n = self.spec, len(ids)
        positions = self.kept.add_tokens(ids)
        x = self.w["model.embed_tokens.weight"][ids]  # (n, hidden)
        hidden, attention = [], []
        for i in range(s.layers):
            p = f"model.layers.{i}."
            h = rms_norm(x, self.w[p + "input_layernorm.weight"], s.eps)
            q = self._lin(p + "self_attn.q_proj", h).reshape(n, s.heads, s.head_dim).transpose(1, 0, 2)
            k = self._lin(p + "self_attn.k_proj", h).reshape(n, s.kv_heads, s.head_dim).transpose(1, 0, 2)
            v = self._lin(p + "self_attn.v_proj", h).reshape(n, s.kv_heads, s.head_dim).transpose(1, 0, 2)
            self.kept.add(i, k, v)
            keys = np.repeat(self.kept.keys(i), s.heads // s.kv_heads, axis=0)  # (heads, S, hd)
            values = np.repeat(self.kept.values[i], s.heads // s.kv_heads, axis=0)
            scores = rope(q, positions, s) @ keys.transpose(0, 2, 1) / math.sqrt(s.head_dim)  # (heads, n, S)
            visible = positions[:, None] >= np.arange(keys.shape[1])[None, :]
            out = softmax(np.where(visible, scores, -np.inf)) @ values  # (heads, n, hd)
            attention.append(out)
            x = x + self._lin(p + "self_attn.o_proj", out.transpose(1, 0, 2).reshape(n, -1))
            h = rms_norm(x, self.w[p + "post_attention_layernorm.weight"], s.eps)
            gate, up = self._lin(p + "mlp.gate_proj", h), self._lin(p + "mlp.up_proj", h)
            x = x + self._lin(p + "mlp.down_proj", gate / (1.0 + np.exp(-gate)) * up)
            hidden.append(x)
        return Fed(hidden, attention, x[-1])

    def head(self, h: np.ndarray) -> np.ndarray:
        """Final norm, then the output head: next-token logits for residual-stream rows h (..., hidden)."""
        table = self.w["model.embed_tokens.weight" if self.spec.tied else "lm_head.weight"]
        with threadpool_limits(1, user_api="blas"):
            return rms_norm(h, self.w["model.norm.weight"], self.spec.eps) @ table.T
