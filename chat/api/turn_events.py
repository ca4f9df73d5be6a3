"""One turn of the engine read as a reply: its events (TurnStarted .. TurnEnded) become PromptRead, ReplyStep, ReplyEnd.

Whatever sent the turn (a request's ids to the cache service), its events are read here,
the engine is told to stop while the request's cancel flag is set, and the numbers are the
engine's own: `TurnStarted.reused_tokens` is what the cache already held (the service's
`CacheMove`), `prompt_tokens` what it prefilled.
"""

import math
import queue
import threading
from collections.abc import Iterator
from typing import Optional

from model.errors import ModelError
from model.loading.tokenizer import TextTokenizer
from model.runtime.chat_engine import ChatEngine
from model.runtime.events import Event, ModelFailed, PrefillDone, TokenGenerated, TurnEnded, TurnFailed, TurnStarted

from .backend import PromptRead, ReplyEnd, ReplyItem, ReplyStep, RequestRefused, TopLogprob

POLL_S = 0.05  # how often a wait for the engine looks at the cancel flag (the engine stops within a step)


class TurnEvents:
    def __init__(self, engine: ChatEngine, events: queue.Queue, tokenizer: TextTokenizer):
        self.engine, self.events, self.tokenizer = engine, events, tokenizer

    def reply(
        self, turn_id: int, cancel: threading.Event, top_logprobs: int, stop_ids: frozenset[int]
    ) -> Iterator[ReplyItem]:
        """Turn `turn_id`, just asked for, as reply items, each step with its `top_logprobs` most likely tokens
        (the engine may compute more rows, for a view that shows them); a token of `stop_ids` ends it unsent."""
        started: Optional[TurnStarted] = None
        prompt_sent = False
        while True:
            event = self.next(cancel)
            if getattr(event, "turn_id", turn_id) != turn_id:
                continue  # another turn's (none here; the app's own, in the app)
            if isinstance(event, TurnStarted):
                started = event
            elif isinstance(event, PrefillDone) and started is not None:
                prompt_sent = True
                yield _prompt_read(started)
            elif isinstance(event, TokenGenerated) and event.token_id not in stop_ids:
                yield self._step(event, top_logprobs)
            elif isinstance(event, TurnEnded):
                if started is not None and not prompt_sent:
                    yield _prompt_read(started)  # cancelled before its first token
                stats = event.stats
                yield ReplyEnd(
                    finish_reason=stats.stop_reason,
                    completion_tokens=stats.generated_tokens,
                    reply_ids=event.reply_ids,
                    text=event.text,
                    stats=stats.as_dict(),
                    cache=event.cache.as_dict(),
                )
                return
            elif isinstance(event, TurnFailed):
                raise RequestRefused(event.message)

    def _step(self, event: TokenGenerated, rows: int) -> ReplyStep:
        token = self._entry(event.token_id, event.prob)
        top = tuple(self._entry(t.id, t.prob) for t in event.top_k[:rows])
        text = "" if event.thinking else event.text  # a thinking model's thoughts are not the answer
        return ReplyStep(token_id=event.token_id, text=text, logprob=token.logprob, token=token, top=top)

    def _entry(self, token_id: int, prob: float) -> TopLogprob:
        logprob = math.log(prob) if prob > 0 else -math.inf
        return TopLogprob(
            token=self.tokenizer.piece(token_id), logprob=logprob, bytes=tuple(self.tokenizer.token_bytes(token_id))
        )

    def next(self, cancel: Optional[threading.Event] = None) -> Event:
        """The engine's next event; while `cancel` is set, the engine is told to stop (it does at its next step).

        Told again at every poll: a cancel that reached the engine before the turn began was cleared by it."""
        while True:
            if cancel is not None and cancel.is_set():
                self.engine.cancel()
            try:
                event = self.events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if isinstance(event, ModelFailed):
                raise ModelError(event.message)
            return event

    def until(self, kind: type) -> Event:
        """Read events up to the first of `kind`; a TurnFailed on the way is a refusal."""
        while not isinstance(event := self.next(), kind):
            if isinstance(event, TurnFailed):
                raise RequestRefused(event.message)
        return event


def _prompt_read(started: TurnStarted) -> PromptRead:
    return PromptRead(prompt_tokens=started.prompt_tokens + started.reused_tokens, cached_tokens=started.reused_tokens)
