"""What one step of the model looks like inside: attention, the logit lens, and the cache grid.

Computed only when asked (the `inspect` command, or a view that is open), so
the fused kernels stay in use for every other step. A probe (see
model.network.probe) keeps the very q and keys the model used, and attention
is recomputed from them with an explicit softmax for the chosen layers; the
logit lens reads each layer's residual stream through the final norm and the
output head.
"""

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx

from model.cache.kv_cache import KVCache
from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings
from model.internals.cache_grid import grid_cells
from model.loading.loader import LoadedModel
from model.network.probe import Probe
from model.network.transformer import Transformer
from model.runtime.chat_text import MIN_SINK
from model.runtime.generate import prefill


@dataclass(frozen=True)
class StepInside:
    attention: dict[int, mx.array]  # layer -> (heads, S) weights of the last query over the S cached positions
    lens: list[mx.array]  # per layer: next-token probabilities (vocab,) read from that layer's output
    logits: mx.array  # the model's own next-token logits (vocab,)


def step_inside(model: Transformer, cache: KVCache, ids: list[int], layers: Optional[list[int]] = None) -> StepInside:
    """Feed `ids` (the last of them is the step looked at) and capture what happens inside."""
    layers = list(range(model.config.num_hidden_layers)) if layers is None else layers
    if len(ids) > 1:
        prefill(model, cache, ids[:-1])
    probe = Probe(attention_layers=layers, hidden=True)
    h = model.hidden_states(mx.array([ids[-1:]]), cache, probe)
    logits = model.head(h)[0, -1]
    attention = {i: seen.weights() for i, seen in probe.attention.items()}
    lens = [mx.softmax(model.head(r)[0, -1].astype(mx.float32), axis=-1) for r in probe.hidden_states]
    return StepInside(attention, lens, logits)


def cache_grid(history_len: int, cache: KVCache, new_tokens: int, buckets: int = 0) -> list[str]:
    """The state of every token of the conversation so far, oldest first (bucketed if asked)."""
    return grid_cells(
        history_len, min(cache.keep, history_len), cache.evicted_total, cache.last_evicted, new_tokens, buckets=buckets
    )


def fresh_cache(loaded: LoadedModel, capacity: int) -> KVCache:
    return make_cache(loaded.model, CacheSettings(max_kv_size=capacity, keep=MIN_SINK))


def _top(tokenizer, probs: mx.array, k: int) -> list:
    ids = mx.argsort(-probs)[:k].tolist()
    return [[i, tokenizer.piece(i), probs[i].item()] for i in ids]


def inspect_prompt(
    loaded: LoadedModel, prompt: str, system: Optional[str] = None, layer: Optional[int] = None, capacity: int = 2048
) -> dict:
    """The `inspect` command's data: the last prompt position, then the first generated token."""
    from model.loading.chat_template import Message, encode_conversation

    tok, model = loaded.tokenizer, loaded.model
    messages = ([Message("system", system)] if system else []) + [Message("user", prompt)]
    ids, _ = encode_conversation(loaded.template, tok, messages, add_generation_prompt=True)
    cache = fresh_cache(loaded, capacity)
    layers = list(range(loaded.info()["layers"]))  # the whole model's: a pipeline stage's config has its own
    steps = []
    feed = ids
    history = 0
    for _ in range(2):
        inside = step_inside(model, cache, feed, layers)
        history += len(feed)
        probs = mx.softmax(inside.logits.astype(mx.float32), axis=-1)
        step = {
            "position": history - 1,
            "token": [ids[-1] if not steps else feed[-1], tok.piece(ids[-1] if not steps else feed[-1])],
            "attention": [inside.attention[i].mean(axis=0).tolist() for i in sorted(inside.attention)],
            "logit_lens": [_top(tok, p, 5) for p in inside.lens],
            "top_k": _top(tok, probs, 10),
            "cache": {"grid": cache_grid(history, cache, len(feed)), "state": cache.state().as_dict()},
        }
        if layer is not None:
            step["attention_heads"] = {"layer": layer, "weights": inside.attention[layer].tolist()}
        steps.append(step)
        feed = [int(mx.argmax(probs).item())]
    first, generated = steps
    return {
        "tokens": {"ids": ids, "pieces": [tok.piece(i) for i in ids]},
        "attention": first["attention"],
        "logit_lens": first["logit_lens"],
        "top_k": first["top_k"],
        "cache": first["cache"],
        **({"attention_heads": first["attention_heads"]} if layer is not None else {}),
        "first_generated": generated,
    }
