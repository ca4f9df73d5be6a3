"""Prompt lookup: speculative decoding with the conversation itself as the draft model.

A reply often repeats what the conversation already holds: a paragraph it was asked
to edit, code, a name, its own earlier sentence. When the last few tokens occurred
before, the tokens that followed them then are a guess at what follows now. One
forward pass over the current token and k guessed ones scores all k + 1 positions at
once (the cache takes them as it takes a prefill chunk); the guesses are kept up to
the first one the model does not confirm, and the cache forgets the rest.

Why the reply is unchanged:
- greedy: a guess is kept only if it is the argmax at its position, and the token
  after the kept ones is that position's argmax, so the reply is token for token
  plain decoding's;
- sampling (the standard speculative sampling rule, with a point-mass draft): a guess
  d at a position whose sampling distribution is p is kept with probability p(d);
  otherwise the token is drawn from p with d removed, renormalised. Together
  P(x) = p(d)·[x = d] + (1 - p(d))·p(x)/(1 - p(d))·[x ≠ d] = p(x): every token is
  drawn from p, the distribution plain decoding samples, and the one the top-k shows.

The proposer is a pure function; `accept` is a pure function over log-probabilities;
`DraftPolicy` holds the per-turn counts and the adaptive rule that keeps free-form
replies from paying for guesses that miss.
"""

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from model import compute_path
from model.runtime.sampling import sampling_distribution, top_k_of
from model.runtime.settings import LookupSettings, SamplingSettings
from model.runtime.stats import DraftCounts

_ITEM = array("i").itemsize  # bytes per token id in the search buffer


def propose(context: Sequence[int], max_draft: int, min_match: int = 2, max_match: int = 4) -> list[int]:
    """The tokens that followed the most recent earlier occurrence of the context's last n tokens.

    Tries n from `max_match` down to `min_match` (a longer match is a better guess) and
    returns up to `max_draft` tokens; [] when no n-gram of those sizes occurred before.
    """
    if max_draft <= 0 or len(context) <= min_match:
        return []
    # The ids as bytes, so the search is bytes.rfind (C speed) rather than a Python loop
    # over a few thousand positions per step; a hit must fall on an item boundary.
    data = array("i", context).tobytes()
    for n in range(min(max_match, len(context) - 1), min_match - 1, -1):
        suffix = data[-n * _ITEM :]
        end = len(data) - _ITEM  # the match must be followed by at least one token before the suffix's end
        while (hit := data.rfind(suffix, 0, end)) >= 0:
            if hit % _ITEM == 0:
                start = hit // _ITEM + n
                return list(context[start : start + max_draft])
            end = hit + len(suffix) - 1  # misaligned: look further back
    return []


def accept(logprobs: mx.array, draft: mx.array, greedy: bool, key: Optional[mx.array]) -> tuple[mx.array, mx.array]:
    """How many draft tokens to keep, and the token after them (both lazy int scalars).

    `logprobs` (k + 1, vocab): row i is the sampling distribution at the position the
    i-th draft token would fill (row k: the position after them all); `draft` (k,).
    """
    k = draft.shape[0]
    guessed = logprobs[:k]
    if greedy:
        kept = mx.argmax(guessed, axis=-1) == draft
    else:
        key_accept, key_draw = mx.random.split(key)
        p_draft = mx.exp(mx.take_along_axis(guessed, draft[:, None], axis=-1)[:, 0])
        kept = mx.random.uniform(shape=(k,), key=key_accept) < p_draft
    n = mx.cumprod(kept.astype(mx.int32)).sum()  # the leading run of kept guesses
    row = logprobs[n]
    if greedy:
        return n, mx.argmax(row)
    # The guess this row rejected is drawn no more (the residual max(p - q, 0) of a point
    # mass q); after a full run (n == k) nothing was rejected and -1 masks nothing.
    rejected = mx.concatenate([draft, mx.array([-1], draft.dtype)])[n]
    residual = mx.where(mx.arange(row.shape[-1]) == rejected, -mx.inf, row)
    return n, mx.random.categorical(residual, key=key_draw)


def row_distributions(logits: mx.array, settings: SamplingSettings, recent: mx.array, fed: list[int]) -> mx.array:
    """Each row's sampling distribution, as plain decoding would have computed it at that position.

    Row i follows fed[: i + 1], so its repetition penalty sees those tokens as recent too."""
    if settings.repetition_penalty == 1.0:
        return sampling_distribution(logits, settings, recent)  # row-wise already
    window = settings.repetition_window
    tail = mx.array(fed, mx.int32)
    rows = [
        sampling_distribution(logits[i], settings, mx.concatenate([recent, tail[: i + 1]])[-window:])
        for i in range(len(fed))
    ]
    return mx.stack(rows)


@dataclass(frozen=True)
class Measured:
    """Prompt lookup against plain decoding on one matrix-product path (2-core x86 VM with
    AVX-512, the default model, greedy; `glasschat bench --lookup-only`, 3 interleaved rounds)."""

    pass_cost: float  # one verify pass of 8 rows over a 1-row step (wall time, best of 12 interleaved)
    free_form: float  # lookup / plain tok/s on a reply that quotes nothing (the worst of the runs)
    quoting: float  # lookup / plain tok/s on a reply that repeats its prompt


MEASURED = {
    "blas": Measured(1.07, 1.18, 5.10),  # float weights: BLAS reads each weight once for all the rows
    # 4/8-bit through the SIMD kernel: weights read once, but each row pays its own dot products.
    # Spread over 2 threads from 4 rows up (qmv.PASS_THREADS_ENV) a pass costs less; two runs
    # then gave free-form 0.95x and 0.97x, quoting 2.46x and 2.43x.
    "kernel, one thread": Measured(2.43, 0.91, 2.12),
    # Measured again with attention and the small ops in the extension (issue 25; load 3.5-5):
    # a 1-row step lost most of its fixed cost, so an 8-row pass is now 3.44 steps (was 2.30),
    # but plain decode is faster too (57-61 tok/s), and lookup still pays: free-form 1.01x
    # (rounds 1.01, 1.17, 0.89), quoting 2.25x (1.81, 2.25, 2.27), 200 and 83 tokens.
    "kernel": Measured(3.44, 1.01, 2.25),
    "mlx": Measured(6.94, 0.76, 1.09),  # 4/8-bit, MLX's quantized_matmul (no SIMD on x86)
}
# Lookup is on by default where it met both of issue 18's floors: a free-form reply at least
# 0.95x plain decoding, and a quoting one at least 2x.
FREE_FORM_FLOOR, QUOTING_FLOOR = 0.95, 2.0


def verify_path(model: nn.Module) -> str:
    """How a verify pass's matrix products run here: "gpu", or on a CPU a key of MEASURED."""
    if compute_path.on_gpu():
        return "gpu"
    from model.kernels import qmv  # the kernel's loader, not MLX itself: imported when first asked

    quantized = [m for m in model.modules() if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))]
    if not quantized:
        return "blas"
    if qmv.extension() is None or not all(qmv.fits(m) for m in quantized):
        return "mlx"
    return "kernel" if qmv.extension().pass_threads() > 1 else "kernel, one thread"


def pays_off(model: nn.Module) -> bool:
    """Whether lookup measured faster on this model's path, so it is on by default (see MEASURED).
    A GPU reads the weights once per pass whatever the rows: on there."""
    path = verify_path(model)
    if path == "gpu":
        return True
    m = MEASURED[path]
    return m.free_form >= FREE_FORM_FLOOR and m.quoting >= QUOTING_FLOOR


@dataclass(frozen=True)
class Verified:
    """A verify pass, read back: the draft tokens kept, and the token after them."""

    kept: list[int]
    kept_probs: list[float]  # each kept token's probability under its position's sampling distribution
    kept_top: list[tuple[list[int], list[float]]]  # each kept token's top-k (ids, probs), best first
    next: tuple  # (token, prob, top_ids, top_probs), evaluated arrays: the step after the kept ones


def verify(model, cache, fed: list[int], settings: SamplingSettings, recent, key, top_k: int) -> Verified:
    """One forward pass over `fed` (the current token, then the draft); the cache keeps the agreeing prefix.

    The cache must take len(fed) tokens the way one-token steps would (`KVCache.step_room`)."""
    k = len(fed) - 1
    logits = model(mx.array([fed]), cache)[0]  # (k + 1, vocab)
    logprobs = row_distributions(logits, settings, recent, fed)
    draft = mx.array(fed[1:], mx.int32)
    n, token = accept(logprobs, draft, settings.greedy, key)
    draft_probs = mx.exp(mx.take_along_axis(logprobs[:k], draft[:, None], axis=-1)[:, 0])
    row = logprobs[n]
    prob = mx.exp(row[token])
    if top_k > 0:
        top_ids, top_probs = top_k_of(logprobs, top_k)
    else:
        top_ids, top_probs = mx.zeros((k + 1, 0), mx.int32), mx.zeros((k + 1, 0), mx.float32)
    mx.eval(n, token, prob, draft_probs, top_ids, top_probs)
    kept = n.item()
    cache.rollback(k - kept)  # the rejected guesses' keys and values are never read again
    ids, probs = top_ids.tolist(), top_probs.tolist()
    return Verified(
        fed[1 : 1 + kept],
        draft_probs.tolist()[:kept],
        [(ids[i], probs[i]) for i in range(kept)],
        (token, prob, top_ids[kept], top_probs[kept]),
    )


@dataclass
class DraftPolicy:
    """When to guess, and how far; counts what was guessed and kept in this reply.

    Guessing costs: a verify pass of k + 1 rows takes longer than one step, and it
    waits for the token before it (a plain step is queued before its input is read).
    So guesses are made only from an n-gram match, the guess length follows how the
    last one did (doubling after a full hit, shrinking to what was kept plus one after
    a miss), and after `settings.patience` passes in a row that kept nothing, guessing
    rests for a stretch that doubles each time it happens again (a free-form reply
    then runs as plain decoding, with a rare probe).
    """

    settings: LookupSettings
    stop_ids: frozenset = field(default_factory=frozenset)  # a guess ends at one: the reply would end there
    drafted: int = 0  # tokens guessed this reply
    accepted: int = 0  # of those, kept
    passes: int = 0  # verify passes
    length: int = 0  # the next guess's length (0: not set yet)
    misses: int = 0  # verify passes in a row that kept nothing
    rest: int = 0  # tokens to go before guessing again
    rest_span: int = 0  # the next rest's length

    def __post_init__(self):
        self.length = self.settings.max_draft
        self.rest_span = self.settings.rest

    @property
    def enabled(self) -> bool:
        # None (not resolved against a model, as in the bench and the tests) guesses.
        return self.settings.enabled is not False and self.settings.max_draft > 0

    def resting(self) -> bool:
        return self.rest > 0

    def advanced(self, tokens: int) -> None:
        """`tokens` more reply tokens were produced."""
        self.rest = max(0, self.rest - tokens)

    def guess(self, context: Sequence[int], room: int) -> list[int]:
        """The draft after `context`, at most `room` tokens (none while resting)."""
        if not self.enabled or self.resting() or room <= 0:
            return []
        s = self.settings
        draft = propose(context, min(self.length, room), s.min_match, s.max_match)
        for i, token in enumerate(draft):
            if token in self.stop_ids:
                return draft[: i + 1]
        return draft

    def verified(self, drafted: int, kept: int) -> None:
        self.passes += 1
        self.drafted += drafted
        self.accepted += kept
        max_draft = self.settings.max_draft
        self.length = min(2 * self.length, max_draft) if kept == drafted else max(1, kept + 1)
        self.misses = self.misses + 1 if kept == 0 else 0
        if self.misses >= self.settings.patience:
            self.rest, self.misses = self.rest_span, 0
            self.rest_span *= 2
        elif kept:
            self.rest_span = self.settings.rest

    def counts(self) -> DraftCounts:
        return DraftCounts(self.drafted, self.accepted)

    @property
    def acceptance(self) -> float:
        return self.counts().acceptance
