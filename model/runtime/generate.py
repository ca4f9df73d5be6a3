"""The generation ladder: prefill -> sample -> decode one token -> decode many.

Decode is pipelined as in mlx-lm: token n+1's forward pass is queued with
`mx.async_eval` before token n is read back, so the CPU-side work of reading,
detokenizing and reporting overlaps the model's work. The cost: when the
consumer stops (end of turn, cancel), one token has been fed speculatively,
and `decode` rolls the cache back by one so it holds exactly what was shown.

With prompt lookup (model.runtime.speculate), a step may instead feed the
current token and a guess in one verify pass and yield several tokens; the
cache then holds all of them, and a consumer that stops partway rolls back
the ones it never saw, so the cache again ends one behind the last token shown.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Optional, Union

import mlx.core as mx

from model.cache.kv_cache import KVCache
from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings
from model.internals.needs import StepNeeds
from model.internals.watch import StepWatcher
from model.network.transformer import Transformer
from model.runtime.sampling import draw, sampling_distribution, top_k_of
from model.runtime.settings import PREFILL_CHUNK, SamplingSettings
from model.runtime.speculate import DraftPolicy, verify


class Cancelled(Exception):
    """The user cancelled; work done so far is kept."""


@dataclass(frozen=True)
class Step:
    token_id: int
    prob: float  # of the sampled token, under the sampling distribution
    top_ids: tuple[int, ...]
    top_probs: tuple[float, ...]
    inside: Optional[dict] = None  # evaluated extras from a watched forward pass (see model.internals.watch)
    drafted: bool = False  # guessed by prompt lookup and confirmed by the model (see model.runtime.speculate)


def prefill(
    model: Transformer,
    cache: KVCache,
    ids: list[int],
    chunk_size: int = PREFILL_CHUNK,
    on_chunk: Callable[[list[int]], None] = lambda _: None,
    cancelled: Callable[[], bool] = lambda: False,
) -> mx.array:
    """Feed `ids` in chunks; returns the (lazy) logits after the last one, shape (vocab,)."""
    chunk_size = min(chunk_size, cache.evictable) if cache is not None else chunk_size
    for start in range(0, len(ids) - 1, chunk_size):
        chunk = ids[start : min(start + chunk_size, len(ids) - 1)]
        if cancelled():
            raise Cancelled
        model.hidden_states(mx.array([chunk]), cache)
        mx.eval([layer.keys for layer in cache.layers], [layer.values for layer in cache.layers])
        on_chunk(chunk)
    if cancelled():
        raise Cancelled
    # The last token alone, so only its logits are computed.
    logits = model(mx.array([ids[-1:]]), cache, last_only=True)[0, -1]
    on_chunk(ids[-1:])
    return logits


def sample_step(
    logits: mx.array, settings: SamplingSettings, key: Optional[mx.array], recent: mx.array, k: int
) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """Lazy: the sampled id, its probability, and the top-k of the sampling distribution."""
    logprobs = sampling_distribution(logits, settings, recent)
    token = draw(logprobs, settings, key)
    prob = mx.exp(logprobs[token])
    if k > 0:
        top_ids, top_probs = top_k_of(logprobs, k)
    else:
        top_ids, top_probs = mx.array([], mx.int32), mx.array([], mx.float32)
    return token, prob, top_ids, top_probs


def _lazy(extras: Optional[dict]) -> list:
    return [v for v in (extras or {}).values() if isinstance(v, mx.array)]


def decode(
    model: Transformer,
    cache: KVCache,
    first_logits: mx.array,
    settings: SamplingSettings,
    max_tokens: int,
    key: Optional[mx.array] = None,
    recent_ids: Optional[list[int]] = None,
    needs: Union[StepNeeds, Callable[[], StepNeeds]] = StepNeeds(top_k=10),
    watcher: Optional[StepWatcher] = None,
    lookup: Optional[DraftPolicy] = None,
) -> Iterator[Step]:
    """Yield generated tokens until the consumer stops or `max_tokens` is reached.

    `recent_ids` are the tokens the cache holds, oldest first. `needs` says what the
    open views want from each step: its top-k rows of the sampled distribution, and
    (through `watcher`, see model.internals.watch) a look inside the forward pass. A
    function is read once at every step, so the views can change it mid-reply and one
    step never mixes two answers. With `lookup`, a step whose context matches an
    earlier stretch verifies a guessed continuation in one pass
    (model.runtime.speculate), unless the watcher is due: a verify pass is never watched."""
    loop = _Decoder(model, cache, settings, key, recent_ids or [], needs, watcher, lookup)
    return loop.run(first_logits, max_tokens)


class _Decoder:
    """One reply's decode loop: its random key, recent tokens, and what the lookup searches."""

    def __init__(self, model, cache, settings, key, recent_ids, needs, watcher, lookup):
        self.model, self.cache, self.settings, self.key = model, cache, settings, key
        self.needs = needs if callable(needs) else (lambda: needs)
        self.watcher = watcher
        self.lookup = lookup
        self.window = settings.repetition_window
        self.recent = mx.array(recent_ids[-self.window :], dtype=mx.int32)
        self.context = list(recent_ids)  # what the lookup searches: the cache's tokens, then the reply

    def keys(self) -> Optional[mx.array]:
        if self.settings.greedy or self.key is None:
            return None
        self.key, sub = mx.random.split(self.key)
        return sub

    def remember(self, tokens: mx.array) -> None:
        """Tokens fed to the model become recent (for the repetition penalty)."""
        if self.settings.repetition_penalty != 1.0:
            self.recent = mx.concatenate([self.recent, tokens.astype(mx.int32)])[-self.window :]

    def sample(self, logits: mx.array, rows: int, extras=None) -> "_Pending":
        pending = _Pending(*sample_step(logits, self.settings, self.keys(), self.recent, rows), extras)
        mx.async_eval(*pending.arrays())
        return pending

    def forward(self, tokens: mx.array, needs: StepNeeds) -> tuple[mx.array, Optional[dict]]:
        if self.watcher is not None:
            return self.watcher.forward(tokens, needs)
        return self.model(tokens, self.cache)[0, -1], None

    def feed(self, current: "_Pending", needs: StepNeeds) -> "_Pending":
        """A plain step: queue `current`'s forward pass (and the next sampling) before it is read."""
        self.remember(current.token[None])
        logits, extras = self.forward(current.token.reshape(1, 1), needs)
        return self.sample(logits, needs.top_k, extras)

    def verify(self, current: "_Pending", draft: list[int], rows: int) -> tuple[list[Step], "_Pending"]:
        """`current` and a guess in one pass: the steps it settled, and the one after them (known)."""
        fed = [current.token_id(), *draft]
        verified = verify(self.model, self.cache, fed, self.settings, self.recent, self.keys(), rows)
        self.lookup.verified(len(draft), len(verified.kept))
        self.remember(mx.array(fed[: 1 + len(verified.kept)]))
        kept = [
            Step(t, p, tuple(ids), tuple(probs), drafted=True)
            for t, p, (ids, probs) in zip(verified.kept, verified.kept_probs, verified.kept_top)
        ]
        upcoming = _Pending(*verified.next)
        upcoming.token_id()  # evaluated with the pass: reading it is free, and the next guess uses it
        return [current.step(), *kept], upcoming

    def run(self, first_logits: mx.array, max_tokens: int) -> Iterator[Step]:
        current = self.sample(first_logits, self.needs().top_k)
        shown = 0
        fed_ahead = 0  # tokens in the cache from the one being shown on: forgotten if the consumer stops there
        try:
            while shown < max_tokens:
                needs = self.needs()  # what the open views want from this step, read once
                room = max_tokens - shown - 1  # tokens that may still follow `current`
                # The first token is prefill's: shown before any guessing, so prefill time stays what it says.
                guessing = shown > 0 and not (self.watcher is not None and self.watcher.due(needs))
                draft = self.draft(current, min(room, self.cache.step_room() - 1)) if guessing else []
                if draft:
                    steps, upcoming = self.verify(current, draft, needs.top_k)
                    fed = len(steps)
                else:
                    upcoming = self.feed(current, needs) if room > 0 else None
                    steps, fed = [current.step()], int(upcoming is not None)
                if self.lookup is not None:
                    self.lookup.advanced(len(steps))
                for i, step in enumerate(steps):
                    fed_ahead = max(fed - i, 0)
                    self.context.append(step.token_id)
                    yield step
                    shown += 1
                current = upcoming
        finally:
            if fed_ahead:
                # The consumer stopped after tokens we had already fed: forget them.
                self.cache.rollback(fed_ahead)

    def draft(self, current: "_Pending", room: int) -> list[int]:
        """The guess after `current`, or [] for a plain step.

        A plain step is queued before `current` is read (so the CPU-side work overlaps the
        model's); reading it first costs that overlap. So `current` is read only when the
        tokens before it already match an earlier stretch, or when it is known anyway."""
        lookup = self.lookup
        if lookup is None or room <= 0 or not lookup.enabled or lookup.resting():
            return []
        if not current.known() and not lookup.guess(self.context, 1):
            return []
        return lookup.guess([*self.context, current.token_id()], room)


class _Pending:
    """A sampled token not yet shown: lazy arrays until it is read."""

    def __init__(self, token, prob, top_ids, top_probs, extras=None):
        self.token, self.prob, self.top_ids, self.top_probs, self.extras = token, prob, top_ids, top_probs, extras
        self._id: Optional[int] = None

    def arrays(self) -> list:
        return [self.token, self.prob, self.top_ids, self.top_probs, *_lazy(self.extras)]

    def known(self) -> bool:
        return self._id is not None

    def token_id(self) -> int:
        if self._id is None:
            self._id = self.token.item()
        return self._id

    def step(self) -> Step:
        return Step(
            self.token_id(), self.prob.item(), tuple(self.top_ids.tolist()), tuple(self.top_probs.tolist()), self.extras
        )


def warm_up(model: Transformer) -> None:
    """One tiny prefill and decode step on a scratch cache, so the first message
    does not pay for kernel compilation and allocator growth."""
    cache = make_cache(model, CacheSettings(max_kv_size=64))
    logits = prefill(model, cache, [1, 2, 3, 4])
    mx.eval(model(mx.argmax(logits).reshape(1, 1), cache))
