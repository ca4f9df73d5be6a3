"""Prompt lookup in the bench: plain against speculative decode, on a reply that quotes and one that does not.

Both settings decode the same greedy reply (checked), interleaved round by round so a
noisy machine slows both alike; each round's ratio is lookup / plain, and the medians
are reported. The rate here is tokens / (last token - end of prefill): a verify pass
yields several tokens at once, so timing from the first token would miss the pass
that produced it.
"""

import statistics
import time

import mlx.core as mx

from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings
from model.loading.chat_template import Message, encode_conversation
from model.runtime.generate import decode, prefill
from model.runtime.settings import LookupSettings, SamplingSettings
from model.runtime.speculate import DraftPolicy

PARAGRAPH = (
    "The lighthouse stood on the edge of the cliff for two hundred years. Every night its keeper climbed "
    "the narrow stairs, trimmed the wick, and watched the beam sweep across the dark water. Ships passed "
    "safely because of that light, and the town below grew rich on the trade they carried. When the keeper "
    "grew old, his daughter took the lamp, and she kept it burning through the great storm of that winter."
)

PROMPTS = {
    "quoting": "Repeat this paragraph exactly:\n\n" + PARAGRAPH,
    "free-form": "Write a short story about a robot who learns to paint.",
}


def timed_reply(loaded, ids: list[int], tokens: int, stop_ids: set, policy=None) -> tuple[list[int], float]:
    """The greedy reply (up to a stop token or `tokens`), and its decode rate."""
    model = loaded.model
    cache = make_cache(model, CacheSettings(max_kv_size=len(ids) + tokens + 16, keep=4))
    logits = prefill(model, cache, ids)
    mx.eval(logits)
    start, last = time.perf_counter(), 0.0
    reply = []
    for step in decode(model, cache, logits, SamplingSettings(), tokens, recent_ids=ids, lookup=policy):
        reply.append(step.token_id)
        last = time.perf_counter()
        if step.token_id in stop_ids:
            break
    return reply, len(reply) / (last - start)


def lookup_speed(loaded, stop_ids: set, tokens: int, rounds: int, log) -> dict:
    """Per prompt: plain and lookup tok/s (medians), their ratio, and how many guesses were kept."""
    out = {}
    for name, user in PROMPTS.items():
        ids, _ = encode_conversation(loaded.template, loaded.tokenizer, [Message("user", user)], True)
        plain_rates, lookup_rates, ratios = [], [], []
        for _ in range(rounds):
            plain, plain_rate = timed_reply(loaded, ids, tokens, stop_ids)
            policy = DraftPolicy(LookupSettings(), frozenset(stop_ids))
            guessed, lookup_rate = timed_reply(loaded, ids, tokens, stop_ids, policy)
            plain_rates.append(plain_rate)
            lookup_rates.append(lookup_rate)
            ratios.append(lookup_rate / plain_rate)
        row = {
            "reply_tokens": len(plain),
            "identical": guessed == plain,
            "plain_tok_s": statistics.median(plain_rates),
            "lookup_tok_s": statistics.median(lookup_rates),
            "ratio": statistics.median(ratios),
            "ratios": ratios,
            "drafted": policy.drafted,
            "accepted": policy.accepted,
            "acceptance": policy.acceptance,
            "verify_passes": policy.passes,
            # Machine-independent: plain decoding makes one forward pass per token.
            "tokens_per_pass": len(guessed) / (len(guessed) - policy.accepted),
        }
        out[name] = row
        log(
            f"  prompt lookup, {name}: plain {row['plain_tok_s']:.1f} tok/s, lookup {row['lookup_tok_s']:.1f} "
            f"({row['ratio']:.2f}x; rounds {', '.join(f'{r:.2f}' for r in ratios)}); "
            f"{row['accepted']}/{row['drafted']} guesses kept ({row['acceptance']:.0%}) in {row['verify_passes']} "
            f"passes; {row['tokens_per_pass']:.2f} tokens per forward pass; {row['reply_tokens']} tokens, "
            f"{'identical' if row['identical'] else 'DIFFERENT'} replies"
        )
    return out
