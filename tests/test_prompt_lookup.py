"""Prompt lookup (model.runtime.speculate): the proposer, the acceptance rule, and exactness.

- the proposer against a brute-force search, including byte-level near misses;
- `accept` with synthetic log-probabilities: greedy by hand, sampled by a seeded chi-square;
- a tiny model: the reply and the cache (tokens and arrays) equal plain decoding's after
  rejected guesses, in a cache that wraps many times, float and 8-bit, stopped anywhere;
- a tiny model sampled with forced guesses: the joint law of three tokens against the
  model's own probabilities, recomputed without a cache in numpy (seeded chi-square);
- the default model, greedy: the golden replies, and a long quoting reply identical to
  plain decoding's with most tokens drafted.

The tiny model's tests run on both code paths (tests/code_paths.py) with the same bounds: on
the gpu path a verify pass is MLX's fused attention over a causal block and `fast.rope`,
float32 as on the cpu path, and the equivalence it must keep is with plain decoding on the
same path. (The default model's are the cpu path's: its gpu path runs ~3 tok/s on this CPU.)
"""

import itertools
import random

import mlx.core as mx
import numpy as np
import pytest
from tiny_models import build_tiny_model

from model.cache.kv_cache import KVCache
from model.cache.kv_quantized import QuantizedKVCache
from model.runtime.generate import decode, prefill
from model.runtime.settings import LookupSettings, SamplingSettings
from model.runtime.speculate import DraftPolicy, accept, propose

# Chi-square critical values at p = 0.001 (standard tables), by degrees of freedom:
# a correct sampler fails one seed in a thousand; the seeds are fixed, so it never flakes.
CHI2_999 = {2: 13.816, 3: 16.266, 4: 18.467, 8: 26.124, 26: 54.052}


def chi_square(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic over the cells with probability > 0, and its degrees of freedom."""
    live = probs > 0
    expected = probs[live] * counts.sum()
    assert counts[~live].sum() == 0, "drew a token of probability 0"
    return float(((counts[live] - expected) ** 2 / expected).sum()), int(live.sum()) - 1


# --- the proposer ------------------------------------------------------------


def brute_force(context, max_draft, min_match, max_match):
    for n in range(max_match, min_match - 1, -1):
        if n >= len(context):
            continue
        suffix = context[-n:]
        for i in range(len(context) - n - 1, -1, -1):
            if context[i : i + n] == suffix:
                return context[i + n : i + n + max_draft]
    return []


def test_propose_by_hand():
    text = [5, 6, 7, 8, 9, 1, 6, 7, 2, 5, 6, 7]
    # "6 7" occurred twice before; "5 6 7" once, at the start: the longer match wins.
    assert propose(text, 3, min_match=2, max_match=3) == [8, 9, 1]
    assert propose(text, 3, min_match=2, max_match=2) == [2, 5, 6]  # the most recent "6 7"
    assert propose(text, 0) == []
    assert propose([1, 2, 3, 4], 5) == []  # nothing recurs
    assert propose([1, 2, 1, 2], 5, min_match=2) == [1, 2]  # runs up to the end of the context


def test_propose_skips_byte_matches_across_token_boundaries():
    # As bytes, the suffix [0, 1] also occurs straddling the first three ids (at byte 3).
    assert propose([0, 1 << 24, 0, 1], 3, min_match=2, max_match=2) == []
    assert propose([0, 1, 7, 0, 1 << 24, 0, 1], 3, min_match=2, max_match=2) == [7, 0, 1 << 24]


def test_propose_equals_brute_force():
    rng = random.Random(0)
    alphabet = [0, 1, 2, 3, 256, 257, 1 << 16, 1 << 24, (1 << 24) + 1, 49151]
    for _ in range(3000):
        size = rng.randint(0, 40)
        vocab = alphabet[: rng.randint(2, len(alphabet))]
        context = [rng.choice(vocab) for _ in range(size)]
        args = (rng.randint(0, 8), rng.randint(1, 3), rng.randint(1, 5))
        args = (args[0], args[1], max(args[1], args[2]))
        assert propose(context, *args) == brute_force(context, *args), (context, args)


# --- the policy ----------------------------------------------------------------


def test_policy_rests_after_misses_and_the_rest_doubles():
    policy = DraftPolicy(LookupSettings(max_draft=6, patience=2, rest=4))
    context = [1, 2, 3, 1, 2]
    assert policy.guess(context, 10) == [3, 1, 2]
    policy.verified(3, 3)  # a full hit: the length doubles, capped
    assert policy.length == 6
    policy.verified(6, 2)  # kept two: next time guess three
    assert policy.length == 3 and not policy.resting()
    for rest in (4, 8):
        policy.verified(3, 0)
        policy.verified(1, 0)  # the second miss in a row: rest
        assert policy.resting() and policy.guess(context, 10) == []
        policy.advanced(rest - 1)
        assert policy.resting()
        policy.advanced(1)
        assert not policy.resting()
    policy.verified(1, 1)  # a hit resets the rest to its first length
    assert policy.rest_span == 4
    assert (policy.drafted, policy.accepted, policy.passes) == (3 + 6 + 2 * 4 + 1, 3 + 2 + 1, 7)
    assert DraftPolicy(LookupSettings(enabled=False)).guess(context, 10) == []
    # A guess ends at a stop token: the reply would end there.
    assert DraftPolicy(LookupSettings(), frozenset({1})).guess(context, 10) == [3, 1]


# --- the acceptance rule on synthetic distributions ---------------------------


def test_accept_greedy_keeps_the_argmax_run():
    rows = mx.log(mx.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]]))
    for draft, kept, token in (([1, 0, 2], 3, 2), ([1, 0, 0], 2, 2), ([1, 2, 2], 1, 0), ([2, 0, 2], 0, 1)):
        n, t = accept(rows, mx.array(draft, mx.int32), greedy=True, key=None)
        assert (n.item(), t.item()) == (kept, token), draft


def test_accept_sampled_draws_each_position_from_its_distribution():
    """Two guesses over a 5-token vocabulary; the first token drawn must follow row 0, and
    the second (when the first guess was kept) row 1, whatever was guessed."""
    p = np.array([[0.5, 0.2, 0.15, 0.1, 0.05], [0.05, 0.05, 0.3, 0.0, 0.6], [0.2, 0.2, 0.2, 0.2, 0.2]])
    logprobs = mx.log(mx.array(p, mx.float32))
    draft = mx.array([1, 4], mx.int32)  # a middling guess, then the likeliest
    first, second = np.zeros(5), np.zeros(5)
    draws = 4000
    for i in range(draws):
        n, token = accept(logprobs, draft, greedy=False, key=mx.random.key(i))
        n, token = n.item(), token.item()
        sequence = [1, 4][:n] + [token]
        first[sequence[0]] += 1
        if len(sequence) > 1:
            second[sequence[1]] += 1
    for counts, row in ((first, p[0]), (second, p[1])):
        stat, df = chi_square(counts, row)
        assert stat < CHI2_999[df], (stat, counts, row)
    assert 0.15 < second.sum() / draws < 0.25  # the first guess is kept with p = 0.2


# --- exactness on a tiny model --------------------------------------------------


class ForcedGuesses(DraftPolicy):
    """Guesses a known reply's continuation with one token corrupted, so every pass
    keeps part of its guess (from none to all) and the cache rolls back the rest."""

    def __init__(self, settings, prompt_len, reply, vocab):
        super().__init__(settings)
        self.prompt_len, self.reply, self.vocab = prompt_len, reply, vocab

    def guess(self, context, room):
        at = len(context) - self.prompt_len  # reply tokens known so far, `current` included
        truth = self.reply[at : at + min(room, self.settings.max_draft)]
        if not truth:
            return []
        bad = at % (len(truth) + 1)  # == len(truth): nothing corrupted
        return [(t + 1) % self.vocab if i == bad else t for i, t in enumerate(truth)]


def tiny_cache(model, kind):
    cls = {"float": KVCache, "q8": QuantizedKVCache}[kind]
    return cls(model.config, 48, model.rope.shift, keep=5)


def run(model, kind, prompt, settings, tokens, policy=None, stop=None, key=None):
    cache = tiny_cache(model, kind)
    steps = decode(
        model, cache, prefill(model, cache, prompt), settings, tokens, key=key, recent_ids=prompt, lookup=policy
    )
    shown = list(itertools.islice(steps, stop))
    steps.close()
    return shown, cache


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_model("llama3", hidden_size=128)  # head_dim 32: a quantization group


@pytest.mark.parametrize("kind, penalty", [("float", 1.0), ("q8", 1.0), ("float", 1.5)])
def test_rejected_guesses_leave_the_cache_plain_decoding_leaves(tiny, kind, penalty, code_path):
    """Greedy, 150 tokens through a 48-token cache (keep 5): it evicts every ~11 tokens,
    so verify passes meet a full cache often; stopped at several points, mid-pass too.
    With a repetition penalty, each guessed position must see the guesses before it as recent."""
    prompt = [3, 17, 9, 40, 3, 17, 9, 41, 22, 8, 3, 17]
    greedy = SamplingSettings(repetition_penalty=penalty, repetition_window=16)
    reply = [s.token_id for s in run(tiny, kind, prompt, greedy, 150)[0]]
    for stop in (7, 61, 100, 150):
        policy = ForcedGuesses(LookupSettings(max_draft=5), len(prompt), reply, tiny.config.vocab_size)
        plain, plain_cache = run(tiny, kind, prompt, greedy, 150, stop=stop)
        guessed, cache = run(tiny, kind, prompt, greedy, 150, policy, stop=stop)
        assert [s.token_id for s in guessed] == [s.token_id for s in plain] == reply[:stop]
        assert 0 < policy.accepted < policy.drafted and any(s.drafted for s in guessed)  # kept and rejected
        # Each token's top-k is its position's, as plain decoding's (8-bit: see the K and V below;
        # the tail of its top-k may swap near-ties).
        atol, ranks = (1e-5, 10) if kind == "float" else (2e-3, 3)
        for mine, theirs in zip(guessed, plain):
            assert mine.top_ids[:ranks] == theirs.top_ids[:ranks]
            np.testing.assert_allclose((mine.prob, *mine.top_probs), (theirs.prob, *theirs.top_probs), atol=atol)
        assert (cache.length, cache.evicted_total, cache.last_evicted) == (
            plain_cache.length,
            plain_cache.evicted_total,
            plain_cache.last_evicted,
        )
        if stop > 60:
            assert cache.evicted_total >= 3 * cache.last_evicted > 0  # three evictions at least
        for mine, theirs in zip(cache.layers, plain_cache.layers):
            for i, (a, b) in enumerate(zip(mine.stored(cache.length), theirs.stored(cache.length))):
                a, b = np.array(a), np.array(b)
                if kind == "float":
                    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)
                else:
                    # A verify pass computes K and V in a batch, so they differ from a single
                    # step's in the last float bits, and a rounding to 8 bits can land on the
                    # other side: at most a step or two of the group's scale (seen: 1.5).
                    step = np.abs(np.array((mine.keys, mine.values)[i][1][..., : cache.length, :]))
                    assert (np.abs(a - b) <= 2 * np.repeat(step, cache.group_size, axis=-1) + 1e-6).all()


def test_step_room_matches_one_token_steps():
    config = build_tiny_model("llama3").config
    cache = KVCache(config, 48, lambda k, _: k, keep=5)  # window 43: a block of 10
    for length, room in ((0, 48), (40, 8), (47, 1), (48, 10)):
        cache.length = length
        assert cache.step_room() == room
    tiny_window = KVCache(config, 8, lambda k, _: k, keep=4)  # a block of int(4 * 0.25) = 1
    tiny_window.length = 8
    assert tiny_window.step_room() == 1


def top3_probs(logits: np.ndarray) -> np.ndarray:
    """Temperature 1, top-k 3, renormalised: in float64 numpy."""
    keep = np.argsort(-logits)[:3]
    p = np.zeros_like(logits, dtype=np.float64)
    p[keep] = np.exp(logits[keep] - logits[keep].max())
    return p / p.sum()


def test_sampled_reply_with_forced_guesses_follows_the_model(tiny, code_path):
    """Four tokens at temperature 1, top-k 3. The first is prefill's, fixed here to the
    likeliest; then a two-token guess: the likeliest next token, then the least likely
    one the filter keeps (so both a kept guess and the residual draw after a rejection
    happen often). The law of tokens 2 to 4 must be the model's, computed from full
    forward passes without a cache."""
    prompt = [3, 17, 9, 40, 3, 17, 9, 41]
    settings = SamplingSettings(temperature=1.0, top_k=3)
    laws = {}

    def law(prefix):
        prefix = tuple(int(t) for t in prefix)
        if prefix not in laws:
            logits = tiny(mx.array([prompt + list(prefix)]))[0, -1]
            laws[prefix] = top3_probs(np.array(logits, dtype=np.float64))
        return laws[prefix]

    first = int(np.argmax(law(())))
    cells, probs = {}, []
    for b in np.flatnonzero(law((first,))):
        for c in np.flatnonzero(law((first, b))):
            for d in np.flatnonzero(law((first, b, c))):
                cells[(int(b), int(c), int(d))] = len(probs)
                probs.append(law((first,))[b] * law((first, b))[c] * law((first, b, c))[d])

    class Guess(DraftPolicy):
        def guess(self, context, room):
            known = tuple(context[len(prompt) :])
            likeliest = int(np.argmax(law(known)))
            support = np.flatnonzero(law((*known, likeliest)))
            least = int(support[np.argmin(law((*known, likeliest))[support])])
            return [likeliest, least][:room]

    counts = np.zeros(len(cells))
    cache = tiny_cache(tiny, "float")
    prefill(tiny, cache, prompt)
    first_logits = mx.where(mx.arange(tiny.config.vocab_size) == first, 0.0, -1e9)  # prefill's token: `first`
    base = cache.length
    policy = Guess(LookupSettings(max_draft=2, patience=10**6))
    draws = 1000
    for i in range(draws):
        steps = decode(tiny, cache, first_logits, settings, 4, key=mx.random.key(i), recent_ids=prompt, lookup=policy)
        shown = list(steps)
        reply = [s.token_id for s in shown]
        assert reply[0] == first
        counts[cells[tuple(reply[1:])]] += 1
        for n, step in enumerate(shown[1:], 1):  # what is shown is the law the token was drawn from
            p = law(reply[:n])
            assert step.prob == pytest.approx(p[step.token_id], abs=1e-5)
            assert step.top_probs[:3] == pytest.approx(sorted(p, reverse=True)[:3], abs=1e-5)
        cache.rollback(cache.length - base)
    assert policy.accepted > draws // 2 and policy.drafted - policy.accepted > draws // 2  # both, often
    stat, df = chi_square(counts, np.array(probs))
    assert stat < CHI2_999[df], stat


# --- the default model ------------------------------------------------------------

QUOTED = (
    "The lighthouse stood on the edge of the cliff for two hundred years. Every night its keeper "
    "climbed the narrow stairs, trimmed the wick, and watched the beam sweep across the dark water. "
    "Ships passed safely because of that light, and the town below grew rich on the trade they carried."
)


def greedy_reply(lm, user, tokens, policy=None):
    from model.loading.chat_template import Message, encode_conversation

    ids, _ = encode_conversation(lm.template, lm.tokenizer, [Message("user", user)], add_generation_prompt=True)
    cache = KVCache(lm.config, 1024, lm.model.rope.shift)
    logits = prefill(lm.model, cache, ids)
    return [
        s.token_id for s in decode(lm.model, cache, logits, SamplingSettings(), tokens, recent_ids=ids, lookup=policy)
    ]


def test_golden_replies_with_lookup(default_model, golden_greedy):
    drafted = 0
    for case in golden_greedy:
        policy = DraftPolicy(LookupSettings())
        assert greedy_reply(default_model, case["user"], len(case["greedy_ids"]), policy) == case["greedy_ids"]
        drafted += policy.drafted
    assert drafted > 0  # some golden replies repeat their prompt's words


def test_quoting_reply_identical_and_mostly_drafted(default_model):
    user = "Repeat this paragraph exactly:\n\n" + QUOTED
    policy = DraftPolicy(LookupSettings())
    guessed = greedy_reply(default_model, user, 64, policy)
    assert guessed == greedy_reply(default_model, user, 64)
    assert policy.accepted > 40 and policy.passes < 16


def test_lookup_is_on_by_default_only_where_a_verify_pass_is_cheap(tiny, code_path):
    """auto: on with float weights on a CPU (8 rows cost ~1.1 steps) and with the SIMD kernel when a
    pass has 2 threads (~2.3), off with one (~2.4: free-form replies ran 0.91x) or through MLX's
    quantized_matmul (~7). On the gpu path always on: a GPU reads the weights once per pass."""
    import mlx.nn as nn

    from model.kernels import qmv
    from model.runtime.speculate import pays_off, verify_path

    assert pays_off(tiny)
    quantized = build_tiny_model("llama3", hidden_size=128)
    nn.quantize(quantized, group_size=32, bits=4)
    if code_path == "gpu":
        assert verify_path(tiny) == verify_path(quantized) == "gpu" and pays_off(quantized)
    else:
        assert verify_path(tiny) == "blas"
        ext = qmv.extension()
        if ext is None:
            assert verify_path(quantized) == "mlx" and not pays_off(quantized)
        else:
            threads = ext.pass_threads()
            try:
                ext.set_pass_threads(2)
                assert verify_path(quantized) == "kernel" and pays_off(quantized)
                ext.set_pass_threads(1)
                assert verify_path(quantized) == "kernel, one thread" and not pays_off(quantized)
            finally:
                ext.set_pass_threads(threads)
    auto = LookupSettings()
    assert auto.resolved(True).enabled is True and auto.resolved(False).enabled is False
    assert LookupSettings(enabled=True).resolved(False).enabled is True  # as the user set it
