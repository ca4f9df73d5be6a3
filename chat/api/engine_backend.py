"""The real model behind the API: each request rendered to ids here, the engine's cache service asked to hold them.

A request is a whole conversation as the client keeps it. Its messages are rendered by
the model's `ChatText` (tokenizer and template, no MLX) on the thread that runs requests,
never the engine's, and sent as one `TurnRequest` with the request's own `DecodeSettings`
(sampling, max tokens, `top_logprobs`). The cache service keeps the longest prefix those
ids share with what it holds and prefills the rest: a request that extends an earlier one
prefills only its new part; one that diverges rolls back to where it diverges (or
rebuilds from the system prompt when that point was evicted). So `cached_tokens` is the
service's `reused_tokens`, and nothing here keeps a tree of turns.

One thing is kept: each reply this backend generated, by its text, with the ids it was
sampled as. A client sends a reply back as text, and text tokenized again need not be the
ids sampled (and a thinking model's thinking is not in the text at all); rendered from its
ids, the history matches what the cache holds, as the app's own turns do.
"""

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Optional

from model.loading.chat_template import Message
from model.runtime import thinking
from model.runtime.chat_engine import EngineFactory
from model.runtime.engine import Engine
from model.runtime.events import ConversationReset, OptionsAdopted
from model.runtime.headless import HeadlessSession
from model.runtime.requests import TurnRequest
from model.runtime.settings import DecodeSettings, EngineOptions, SamplingSettings

from .backend import ApiMessage, ReplyEnd, ReplyItem, ReplySettings, RequestRefused, ServedRequest
from .turn_events import TurnEvents

SYSTEM_ROLES = ("system", "developer")
REPLIES_KEPT = 256  # replies remembered by text -> sampled ids; an older one is tokenized again (costing reuse only)


def split_messages(
    messages: tuple[ApiMessage, ...], default_system: Optional[str]
) -> tuple[Optional[str], list[ApiMessage]]:
    """(system prompt, the user/assistant messages after it); RequestRefused if they do not alternate."""
    lead = 0
    while lead < len(messages) and messages[lead].role in SYSTEM_ROLES:
        lead += 1
    system = "\n\n".join(m.content for m in messages[:lead]) if lead else default_system
    rest = list(messages[lead:])
    for i, m in enumerate(rest):
        expected = "user" if i % 2 == 0 else "assistant"
        if m.role != expected:
            raise RequestRefused(
                f"messages[{lead + i}] is a {m.role} message where a {expected} message was expected: after the "
                "system messages, user and assistant messages must alternate, starting and ending with a user message."
            )
    if not rest:
        raise RequestRefused("The request has no user message after its system messages: add one.")
    return system, rest


def decode_settings(options: EngineOptions, settings: ReplySettings) -> DecodeSettings:
    """A request's sampling, length and top-k over the server's own (`options`: its command line, or the app's)."""
    chosen = {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k,
        "min_p": settings.min_p,
        "repetition_penalty": settings.repetition_penalty,
        "seed": settings.seed,
    }
    sampling = replace(options.sampling, **{k: v for k, v in chosen.items() if v is not None})
    return replace(
        options.decode(),
        sampling=sampling,
        max_tokens=settings.max_tokens or options.max_tokens,
        top_logprobs=settings.top_logprobs or 0,  # the top-k costs time per token: computed only when asked for
    )


class ReplyMemory:
    """The replies generated lately, by their text: the ids each was sampled as."""

    def __init__(self, kept: int = REPLIES_KEPT):
        self.kept = kept
        self.by_text: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def remember(self, text: str, reply_ids: tuple[int, ...]) -> None:
        self.by_text[text] = reply_ids
        self.by_text.move_to_end(text)
        while len(self.by_text) > self.kept:
            self.by_text.popitem(last=False)

    def ids(self, text: str) -> Optional[tuple[int, ...]]:
        return self.by_text.get(text)


class EngineBackend:
    """Implements `backend.ServeBackend` on the engine (its own thread owns MLX; this one renders and reads events)."""

    def __init__(self, options: EngineOptions, factory: EngineFactory = Engine):
        self.options = options
        self.session = HeadlessSession(options, factory=factory)  # loads the model; ModelError if it cannot
        self.engine = self.session.engine
        self.text = self.engine.text()
        self.reader = TurnEvents(self.engine, self.session.events, self.text.tokenizer)
        self.info = self.session.ready.info
        self.replies = ReplyMemory()
        self.sinks: dict[Optional[str], int] = {}  # system prompt -> its length in tokens
        self.turn_id = 0

    def model_id(self) -> str:
        return self.options.model or Path(self.info.get("path") or "default").stem

    def close(self) -> None:
        self.session.close()

    # --- one request --------------------------------------------------------------

    def answer(self, request: ServedRequest, cancel: threading.Event) -> Iterator[ReplyItem]:
        system, messages = split_messages(request.messages, self.options.system)
        decode = decode_settings(self.options, request.settings)
        self._seed(decode.sampling)
        ids = self.text.render(self._messages(system, messages), True, self.options.thinking)
        self.turn_id += 1
        stops = decode.stop_ids if decode.stop_ids is not None else self.text.stop_ids
        self.engine.generate(
            TurnRequest(
                turn_id=self.turn_id,
                ids=tuple(ids),
                sink=self._sink(system),
                opens_thinking=self.text.opens_thinking(ids),
                decode=decode,
            )
        )
        for item in self.reader.reply(self.turn_id, cancel, decode.top_logprobs, stops):
            if isinstance(item, ReplyEnd) and item.reply_ids:
                self.replies.remember(item.text, item.reply_ids)
            yield item

    def _seed(self, sampling: SamplingSettings) -> None:
        """A seeded sampled request draws from that seed's first key: only the engine's reset makes one (it empties
        the cache, so such a request reuses nothing)."""
        if sampling.seed is None or sampling.greedy:
            return
        self.engine.update(replace(self.options, sampling=sampling))
        self.reader.until(OptionsAdopted)
        self.engine.reset()
        self.reader.until(ConversationReset)

    def _messages(self, system: Optional[str], messages: list[ApiMessage]) -> list[Message]:
        soft_off = self.options.thinking is False and self.text.thinking_switch == "/no_think"
        rendered = [Message("system", system)] if system else []
        for m in messages:
            if m.role == "assistant":
                rendered.append(Message("assistant", m.content, token_ids=self.replies.ids(m.content)))
            else:  # a thinking model asked not to think is told in every user message, as the app's turns are
                user = (
                    m.content + thinking.SOFT_OFF
                    if soft_off and not m.content.endswith(thinking.SOFT_OFF)
                    else m.content
                )
                rendered.append(Message("user", user))
        return rendered

    def _sink(self, system: Optional[str]) -> int:
        if system not in self.sinks:
            self.sinks[system] = self.text.sink_length(system)
        return self.sinks[system]
