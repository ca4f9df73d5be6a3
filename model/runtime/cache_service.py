"""The KV cache as a service on the MLX thread: hold these ids, decode with these settings, score these ids.

Whoever owns a conversation renders it to token ids (model.runtime.conversation) and asks:

- `hold(ids)`: make the cache hold exactly these ids. `history` is every token fed, in
  order; since eviction always drops the oldest tokens after the sink, the cache holds
  `history[:keep] + history[keep + evicted_total:]`. The longest prefix `ids` share with
  `history` is kept; if the cache holds more, it is rolled back to that prefix when it
  still has it, and rebuilt from the sink when that point was evicted since (or lies
  further back than a sliding-window layer keeps); then the rest is prefilled. `CacheMove`
  says which.
- `decode(move, settings)`: prefill what the move left, then yield one `GenerationStep`
  per token, the way mlx-lm's `stream_generate` yields its responses, until a stop token,
  `max_tokens`, a cancel (checked once a step) or the consumer stops reading. The cache
  then holds the prompt and every token shown but the last.
- `score(prompt, reply)`: a reply's probabilities and top-k, read again in one pass.

A template may render an earlier turn differently from how it was fed (Qwen3's drops the
thinking of every reply before the last user message): the same diff handles it, and
`rolled_back` says how much went. (mlx-lm's prompt cache starts over here.)
"""

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Optional

import mlx.core as mx

from model.cache.kv_cache import KVCache
from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings
from model.cache.state import CacheState
from model.errors import ModelError
from model.internals.needs import StepNeeds
from model.internals.watch import StepWatcher
from model.loading.loader import LoadedModel
from model.runtime import generate, thinking
from model.runtime.model_source import stop_ids
from model.runtime.rescore import ScoredStep, score_reply
from model.runtime.settings import PREFILL_CHUNK, REPLY_ROOM, DecodeSettings
from model.runtime.speculate import DraftPolicy, pays_off
from model.runtime.stats import DraftCounts


@dataclass(frozen=True, kw_only=True)
class CacheMove:
    """How the cache came to hold a prefix of the ids asked for; `to_feed` is what is left to prefill."""

    to_feed: list[int]
    reused: int  # tokens kept from what the cache held
    rolled_back: int = 0  # tokens taken off first (another branch, or a turn the template rewrote)
    rebuilt: bool = False  # the shared point had been evicted: the sink was kept and the rest is read again


@dataclass(frozen=True, kw_only=True)
class GenerationStep:
    """One generated token, as mlx-lm's GenerationResponse: the token, its probability and top-k, and why it stops."""

    token_id: int
    prob: float  # under the sampling distribution
    top_ids: tuple[int, ...]
    top_probs: tuple[float, ...]
    inside: Optional[dict] = None  # what a watched step saw (model.internals.watch), evaluated
    drafted: bool = False  # guessed by prompt lookup and confirmed by the model
    drafts: DraftCounts = DraftCounts()  # prompt lookup in this reply so far
    finish_reason: Optional[str] = None  # "stop", "length" or "cancelled" on the last step; None before it


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class CacheService:
    """One model's KV cache and what it has been fed; used from the one thread that owns MLX."""

    def __init__(self, loaded: LoadedModel, settings: CacheSettings, prefill_chunk: int = PREFILL_CHUNK):
        self.loaded, self.settings, self.prefill_chunk = loaded, settings, prefill_chunk
        self.cache: KVCache = make_cache(loaded.model, settings)  # raises ModelError if the settings cannot be met
        self.history: list[int] = []  # every token fed, in order
        self.sink: Optional[int] = None  # the sink the cache was last set up for
        self.stop_ids = frozenset(stop_ids(loaded.tokenizer))  # a reply's end, unless a request names others
        self.lookup_pays = pays_off(loaded.model)  # prompt lookup's default on this model (speculate.MEASURED)
        self.markers = thinking.markers(loaded.tokenizer)  # a thinking model's <think> and </think>, if any

    # --- what it holds ---------------------------------------------------------

    def state(self) -> CacheState:
        return self.cache.state()

    def held_ids(self) -> list[int]:
        keep, gone = self.cache.keep, self.cache.evicted_total
        return self.history[:keep] + self.history[keep + gone :]

    def clear(self) -> None:
        """Empty: nothing held, nothing fed; the sink is set again by the next request."""
        self.history, self.sink = [], None
        self.cache.reset()

    def _pin(self, sink: int) -> None:
        """The sink for a conversation whose system block is `sink` tokens: `--keep` if set, else that block
        (at most half the cache: a longer system prompt is pinned only in part). A new sink starts over."""
        if sink == self.sink:
            return
        self.clear()
        self.sink = sink
        keep = self.settings.keep  # checked when the cache was made (see kv_factory)
        self.cache.keep = keep if keep is not None else min(sink, self.cache.capacity // 2)

    # --- make the cache hold these ids ---------------------------------------------

    def move(self, ids: Sequence[int], sink: int, need_logits: bool = True) -> CacheMove:
        """Bring the cache to the longest prefix of `ids` it can keep; what follows is left to prefill.

        If the common prefix ends after the evicted block, rolling the cache back to it is exact
        (nothing after it was ever seen by what is kept). If it ends inside the evicted block, or
        further back than a sliding-window layer still holds, those keys are gone: the sink is kept
        (it never moves) and the rest is read again, as a fresh prefill of that path would. A turn
        needs the logits after the last id, so at least one is left to feed when `need_logits`."""
        self._pin(sink)
        held, cache = len(self.history), self.cache
        common = common_prefix(self.history, ids)
        if need_logits and common == len(ids):
            common = max(0, common - 1)
        rebuilt = False
        if common < held:
            back = held - common
            if common >= cache.keep + cache.evicted_total and cache.can_rollback(back):
                cache.rollback(back)
            else:
                # Evicted, or dropped by a sliding-window layer (it keeps little more than its window).
                rebuilt = cache.evicted_total > 0 or common > cache.keep
                common = min(common, cache.keep)
                cache.restart_at(common)
            self.history = self.history[:common]
        return CacheMove(to_feed=list(ids[common:]), reused=cache.length, rolled_back=held - common, rebuilt=rebuilt)

    def notes(self, move: CacheMove) -> list[str]:
        """What a user should know about a turn's move: a rebuild, or a prompt longer than the cache."""
        notes = []
        if move.rebuilt:
            notes.append(
                "That point of the conversation had been evicted from the cache since: "
                f"it was rebuilt from the system prompt ({len(move.to_feed)} tokens read again)."
            )
        room = self.cache.evictable - REPLY_ROOM
        if len(move.to_feed) > room:
            # Still answered: prefill runs in chunks and evicts as it goes.
            notes.append(
                f"This message is {len(move.to_feed)} tokens, more than the {room} the cache can hold beside a "
                f"reply: its start is evicted as it is read. Restart with a larger --max-kv-size to keep it all."
            )
        return notes

    def prefill(
        self,
        ids: list[int],
        on_chunk: Callable[[int, int], None] = lambda done, total: None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> mx.array:
        """Feed `ids` in chunks, recording each; `on_chunk(done, total)` after each. The (lazy) logits after the last."""
        done = 0

        def fed(chunk: list[int]) -> None:
            nonlocal done
            self.history.extend(chunk)
            done += len(chunk)
            on_chunk(done, len(ids))

        return generate.prefill(self.loaded.model, self.cache, ids, self.prefill_chunk, fed, cancelled)

    def hold(
        self, ids: Sequence[int], sink: int, on_chunk: Callable[[int, int], None] = lambda d, t: None
    ) -> CacheMove:
        """Make the cache hold exactly `ids` (a path shown again, a saved chat reopened)."""
        move = self.move(ids, sink, need_logits=False)
        if move.to_feed:
            mx.eval(self.prefill(move.to_feed, on_chunk))
        return move

    # --- decode with these settings ----------------------------------------------

    def decode(
        self,
        move: CacheMove,
        settings: DecodeSettings,
        key: Optional[mx.array],
        needs: Callable[[], StepNeeds],
        cancelled: Callable[[], bool] = lambda: False,
        on_chunk: Callable[[int, int], None] = lambda done, total: None,
        now: Callable[[], float] = time.perf_counter,
    ) -> Iterator[GenerationStep]:
        """Prefill what `move` left (raises generate.Cancelled if cancelled meanwhile), then decode.

        `needs` (what the open views want from a step) is read once per step, with at least
        `settings.top_logprobs` top-k rows; `now` times the watched steps."""
        logits = self.prefill(move.to_feed, on_chunk, cancelled)
        stops = settings.stop_ids if settings.stop_ids is not None else self.stop_ids
        lookup = DraftPolicy(settings.lookup.resolved(self.lookup_pays), stops)
        rows = settings.top_logprobs

        def wanted() -> StepNeeds:
            asked = needs()
            return asked if asked.top_k >= rows else replace(asked, top_k=rows)

        model = self.loaded.model
        steps = generate.decode(
            model,
            self.cache,
            logits,
            settings.sampling,
            settings.max_tokens,
            key=key,
            recent_ids=self.held_ids(),
            needs=wanted,
            watcher=StepWatcher(model, self.cache, now),
            lookup=lookup,
        )
        shown: list[int] = []
        try:
            for step in steps:
                shown.append(step.token_id)
                finish = "stop" if step.token_id in stops else "cancelled" if cancelled() else None
                if finish is None and len(shown) == settings.max_tokens:
                    finish = "length"
                yield GenerationStep(
                    token_id=step.token_id,
                    prob=step.prob,
                    top_ids=step.top_ids,
                    top_probs=step.top_probs,
                    inside=step.inside,
                    drafted=step.drafted,
                    drafts=lookup.counts(),
                    finish_reason=finish,
                )
                if finish is not None:
                    break
        finally:
            steps.close()  # rolls back the token fed ahead, if any
            # Every token shown but the last went into the cache; the next turn's prompt starts
            # with the last one (if it was not a stop token), then the closing markup.
            self.history.extend(shown[:-1])

    # --- score these ids ----------------------------------------------------------

    def score(self, prompt: Sequence[int], reply: Sequence[int], k: int) -> list[ScoredStep]:
        """`reply`'s steps after `prompt`, from one pass without the cache (which is left as it is);
        ModelError with one line where that cannot be done."""
        loaded = self.loaded
        if loaded.group is not None:  # the followers would wait for a pass they were not told of
            raise ModelError("A saved reply's probabilities cannot be read again on a split model.")
        end, capacity = len(prompt) + len(reply), self.cache.capacity
        if end > capacity:  # one pass over more than the cache ever held: memory unbounded, and not what it saw
            raise ModelError(
                f"That reply ends {end} tokens into the chat, past the cache's {capacity}: "
                "its probabilities are not read again."
            )
        return score_reply(loaded.model, loaded.tokenizer, list(prompt), list(reply), k)
