"""A reply read again: each of its tokens' probability and top-k, from one forward pass over prompt and reply.

A reply the engine wrote carries, step by step, the top-k it was drawn from;
a reply loaded from a saved chat has only its token ids. To fork it at a token
(the confidence view's picker), its steps are recomputed teacher-forced: the
logits at position i of prompt + reply predict token i + 1, so one pass gives
every step. No KV cache is used, so the conversation's cache is left as it is.
The distribution is the model's own (temperature 1): what a greedy reply's
top-k showed when it was written (a sampled reply's filters are not known now).
"""

from dataclasses import dataclass

import mlx.core as mx

from model.loading.detokenizer import StreamingDetokenizer
from model.loading.tokenizer import TextTokenizer
from model.network.fast_math import log_softmax
from model.runtime.events import TopToken
from model.runtime.sampling import top_k_of


@dataclass(frozen=True)
class ScoredStep:
    token_id: int
    text: str  # the text this token completed, as it streamed
    prob: float
    top_k: tuple[TopToken, ...]


def score_reply(model, tokenizer: TextTokenizer, prompt: list[int], reply: list[int], k: int) -> list[ScoredStep]:
    """The steps of `reply` after `prompt` (the prompt ends with the generation prompt)."""
    if not reply or not prompt:
        return []
    ids = prompt + reply
    logits = model(mx.array([ids[:-1]]))[0, len(prompt) - 1 :]  # (len(reply), vocab): each predicts a reply token
    logprobs = log_softmax(logits.astype(mx.float32))
    top_ids, top_probs = top_k_of(logprobs, k)
    probs = mx.exp(mx.take_along_axis(logprobs, mx.array(reply)[:, None], axis=-1))[:, 0]
    mx.eval(top_ids, top_probs, probs)
    detok = StreamingDetokenizer(tokenizer)
    texts = [detok.add(t) for t in reply]
    texts[-1] += detok.flush()
    return [
        ScoredStep(t, text, p, tuple(TopToken(id=i, text=tokenizer.piece(i), prob=q) for i, q in zip(ti, tp)))
        for t, text, p, ti, tp in zip(reply, texts, probs.tolist(), top_ids.tolist(), top_probs.tolist())
    ]
