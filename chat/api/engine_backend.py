"""The real model behind the API, driven through the engine's requests and event stream (`ChatEngine`).

The engine keeps one conversation as a tree of turns and one KV cache, and reuses the
longest prefix the cache shares with each turn's prompt. So a request is mapped onto
that tree: its user/assistant pairs are followed from the root as long as they match
turns this backend served (the user's text as sent, the reply as generated), and its
last user message becomes a new turn branching there (`edit`). A request that extends
an earlier one therefore prefills only its new message; one that diverges branches
where it diverges, and the engine rolls the cache back to the shared prefix. A request
whose history holds replies the engine never wrote (or another system prompt) starts
the conversation over from that history (`restore`): nothing cached is reused then.

`cached_tokens` is the turn's reused tokens (less any history restored for this very
request); `prompt_tokens - cached_tokens` is what this request prefilled. The turn's
events are read as a reply by `turn_events`.
"""

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Optional

from model.loading.chat_template import Message
from model.runtime.branches import ROOT
from model.runtime.chat_engine import EngineFactory
from model.runtime.engine import Engine, EngineOptions
from model.runtime.events import (
    ConversationReset,
    HistoryRestored,
    TurnEnded,
)
from model.runtime.model_source import stop_ids
from model.runtime.needs import StepNeeds

from ..headless import HeadlessSession
from .backend import (
    ApiMessage,
    ReplyItem,
    ReplySettings,
    RequestRefused,
    ServedRequest,
)
from .turn_events import TurnEvents

SYSTEM_ROLES = ("system", "developer")


def split_messages(
    messages: tuple[ApiMessage, ...], default_system: Optional[str]
) -> tuple[Optional[str], list[tuple[str, str]], str]:
    """(system prompt, earlier user/assistant pairs, the last user message); RequestRefused if they do not alternate."""
    lead = 0
    while lead < len(messages) and messages[lead].role in SYSTEM_ROLES:
        lead += 1
    system = "\n\n".join(m.content for m in messages[:lead]) if lead else default_system
    rest = messages[lead:]
    for i, m in enumerate(rest):
        expected = "user" if i % 2 == 0 else "assistant"
        if m.role != expected:
            raise RequestRefused(
                f"messages[{lead + i}] is a {m.role} message where a {expected} message was expected: after the "
                "system messages, user and assistant messages must alternate, starting and ending with a user message."
            )
    pairs = [(rest[i].content, rest[i + 1].content) for i in range(0, len(rest) - 1, 2)]
    return system, pairs, rest[-1].content


class EngineBackend:
    """Implements `backend.ServeBackend` on the engine (its own thread owns MLX; this one reads its events)."""

    def __init__(self, options: EngineOptions, factory: EngineFactory = Engine):
        self.options = options
        self.session = HeadlessSession(options, factory=factory)  # loads the model; ModelError if it cannot
        self.engine = self.session.engine
        self.tokenizer = self.engine.tokenizer()
        self.reader = TurnEvents(self.engine, self.session.events, self.tokenizer, stop_ids(self.tokenizer))
        self.info = self.session.ready.info
        # Turns served in the engine's conversation: number -> (parent, user text as sent, reply as generated).
        self.turns: dict[int, tuple[int, str, str]] = {}
        self.system = options.system
        self.sampling, self.max_tokens, self.top_k = options.sampling, options.max_tokens, -1

    def model_id(self) -> str:
        return self.options.model or Path(self.info.get("path") or "default").stem

    def close(self) -> None:
        self.session.close()

    # --- one request --------------------------------------------------------------

    def answer(self, request: ServedRequest, cancel: threading.Event) -> Iterator[ReplyItem]:
        system, pairs, last = split_messages(request.messages, self.options.system)
        fresh_key = self._apply(request.settings)
        if fresh_key or system != self.system:
            self._reset(system)  # a seed is a fresh random key, and only a reset makes one
        after, matched = self._follow(pairs)
        restored = 0
        if matched < len(pairs):
            after, restored = self._restore(system, pairs)
        self.engine.edit(after, last)

        def served(ended: TurnEnded) -> None:
            self.turns[ended.turn] = (ended.path[-2] if len(ended.path) > 1 else ROOT, last, ended.text)

        yield from self.reader.reply(cancel, restored, served)

    def _apply(self, settings: ReplySettings) -> bool:
        """The request's sampling, length and top-k, where they differ from what the engine has; whether a seed
        asks for a fresh random key."""
        chosen = {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "top_k": settings.top_k,
            "min_p": settings.min_p,
            "repetition_penalty": settings.repetition_penalty,
            "seed": settings.seed,
        }
        sampling = replace(self.options.sampling, **{k: v for k, v in chosen.items() if v is not None})
        max_tokens = settings.max_tokens or self.options.max_tokens
        if (sampling, max_tokens) != (self.sampling, self.max_tokens):
            self.engine.update(sampling=sampling, max_tokens=max_tokens)
            self.sampling, self.max_tokens = sampling, max_tokens
        top_k = settings.top_logprobs or 0  # the top-k costs time per token: computed only when asked for
        if top_k != self.top_k:
            self.engine.set_needs(StepNeeds(top_k=top_k))
            self.top_k = top_k
        return settings.seed is not None and not sampling.greedy

    def _reset(self, system: Optional[str]) -> None:
        self.engine.reset(system)
        self.reader.until(ConversationReset)
        self.system, self.turns = system, {}

    def _follow(self, pairs: list[tuple[str, str]]) -> tuple[int, int]:
        """The last served turn the pairs lead to from the root, and how many pairs matched on the way."""
        node = ROOT
        for matched, (user, reply) in enumerate(pairs):
            children = [n for n, (parent, u, r) in self.turns.items() if parent == node and (u, r) == (user, reply)]
            if not children:
                return node, matched
            node = max(children)  # the newest, if the same exchange was served twice
        return node, len(pairs)

    def _restore(self, system: Optional[str], pairs: list[tuple[str, str]]) -> tuple[int, int]:
        """Start over on the request's history: (the turn it ends at, tokens prefilled to restore it)."""
        messages = [m for user, reply in pairs for m in (Message("user", user), Message("assistant", reply))]
        self.engine.restore(system, messages)
        restored = self.reader.until(HistoryRestored)
        self.system, self.turns = system, {}
        first = restored.turn_offset + 1
        for i, (user, reply) in enumerate(pairs):
            self.turns[first + i] = (ROOT if i == 0 else first + i - 1, user, reply)
        return first + len(pairs) - 1, restored.tokens
