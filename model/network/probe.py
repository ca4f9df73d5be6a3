"""The probe: an observer passed into the forward pass, to see inside one step.

nnsight and TransformerLens call this a hook point. Nothing is patched: the
forward pass takes an optional `Probe`, and for the layers it asks about it
records what attention saw and gave (the query after RoPE, every key and value
the cache returned, the output), and each block's output (the residual stream
the logit lens reads). Records are lazy arrays, evaluated only if read.
Without a probe the forward pass runs exactly the ops it always runs.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Optional

import mlx.core as mx

from model.network.attention import KV, plain


def explicit_attention(q: mx.array, keys: mx.array, scale: float, softcap: Optional[float] = None) -> mx.array:
    """softmax(q k^T * scale) for the last query row; q (1, nh, L, hd), keys (1, nkv, S, hd) -> (nh, S)."""
    n_heads, n_kv = q.shape[1], keys.shape[1]
    k = mx.repeat(keys, n_heads // n_kv, axis=1)  # (1, nh, S, hd): plain, no fused kernel
    scores = (q[:, :, -1:, :].astype(mx.float32) * scale) @ k.astype(mx.float32).swapaxes(-1, -2)
    if softcap is not None:  # Gemma 2 caps the scores before the softmax
        scores = mx.tanh(scores / softcap) * softcap
    return mx.softmax(scores, axis=-1, precise=True)[0, :, 0, :]  # the last query sees every key


@dataclass(frozen=True)
class AttentionSeen:
    """One layer's attention in one forward pass, as the model ran it."""

    q: mx.array  # (B, nh, L, hd), after RoPE
    k: mx.array  # (B, nkv, L, hd): this pass's new keys, after RoPE, as given to the cache
    v: mx.array  # (B, nkv, L, hd): this pass's new values
    keys: KV  # (B, nkv, S, hd): every key attended over, the new ones last, as the cache returned them
    values: KV
    scale: float
    out: mx.array  # (B, nh, L, hd): what attention gave the model
    softcap: Optional[float] = None  # Gemma 2's cap on the scores, if the model has one

    def weights(self) -> mx.array:
        """The last query's weights over the S keys, recomputed in the open (the fused kernel hides them): (nh, S)."""
        return explicit_attention(self.q, plain(self.keys), self.scale, self.softcap)


Recorder = Callable[[AttentionSeen], None]


class Probe:
    """What to record during one forward pass, and, after it, what was recorded."""

    def __init__(self, attention_layers: Iterable[int] = (), hidden: bool = False):
        self.attention_layers = frozenset(attention_layers)
        self.hidden = hidden  # record every block's output
        self.attention: dict[int, AttentionSeen] = {}
        self.hidden_states: list[mx.array] = []  # per block, bottom to top: (B, L, d)

    def attention_recorder(self, layer: int) -> Optional[Recorder]:
        """What the layer's attention calls with what it saw, or None when this layer is not asked about."""
        if layer not in self.attention_layers:
            return None
        return lambda seen: self.attention.__setitem__(layer, seen)

    def block_output(self, h: mx.array) -> None:
        if self.hidden:
            self.hidden_states.append(h)
