"""What the server needs from a model, as one small Protocol: the real engine and the tests' fake both implement it.

A backend answers one request at a time (the `line` guarantees it). `answer` is a
generator: first a `PromptRead` once the prompt is in the cache (how many tokens it
took, how many were already there), then a `ReplyStep` per token of the reply, then
one `ReplyEnd`. Once `cancel` is set (the client went away, a stop string matched) the
reply must stop within a step, end with a `ReplyEnd` saying "cancelled", and leave the
cache holding exactly what was generated, as a cancelled turn in the app does.
"""

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional, Protocol, Union, runtime_checkable

ROLES = ("system", "developer", "user", "assistant")  # developer: OpenAI's newer name for system


@dataclass(frozen=True, kw_only=True)
class ApiMessage:
    role: str  # one of ROLES
    content: str


@dataclass(frozen=True, kw_only=True)
class ReplySettings:
    """One request's sampling and length; None leaves the server's own setting (its command line) in force."""

    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None  # an extension llama-server and vLLM accept too
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    max_tokens: Optional[int] = None
    seed: Optional[int] = None
    top_logprobs: Optional[int] = None  # None: no logprobs; 0..20: the chosen token's, and that many others
    stop: tuple[str, ...] = ()  # handled by the server over the text (see stop_strings)


@dataclass(frozen=True, kw_only=True)
class ServedRequest:
    messages: tuple[ApiMessage, ...]
    settings: ReplySettings = field(default_factory=ReplySettings)
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage
    user: Optional[str] = None  # the client's name for itself, if it gave one


@dataclass(frozen=True, kw_only=True)
class PromptRead:
    """The prompt is in the cache: the first token comes next."""

    prompt_tokens: int  # every token of the prompt, cached or not
    cached_tokens: int  # of those, already in the cache from an earlier request


@dataclass(frozen=True, kw_only=True)
class TopLogprob:
    token: str  # readable piece (bytes that are not whole characters show as \xNN)
    logprob: float
    bytes: tuple[int, ...]  # the raw bytes the token stands for


@dataclass(frozen=True, kw_only=True)
class ReplyStep:
    token_id: int
    text: str  # newly complete text (may be empty mid-character)
    logprob: float  # of this token, under the distribution the Next token panel shows
    token: TopLogprob  # this token as a logprobs entry
    top: tuple[TopLogprob, ...] = ()  # the most likely tokens of that distribution, best first


@dataclass(frozen=True, kw_only=True)
class ReplyEnd:
    finish_reason: str  # "stop" (an end token), "length" or "cancelled"
    completion_tokens: int  # every token sampled, an end token included (as the Decode panel counts them)
    reply_ids: tuple[int, ...] = ()  # the reply without its end token, as the conversation store keeps it
    text: str = ""  # the reply's answer, as the client is sent it (a thinking model's thinking apart)
    stats: dict = field(default_factory=dict)  # the turn's numbers, for the store (TurnStats.as_dict)
    cache: dict = field(default_factory=dict)  # the cache after it (CacheState.as_dict)


ReplyItem = Union[PromptRead, ReplyStep, ReplyEnd]


class RequestRefused(Exception):
    """The backend cannot answer this request as asked; the message says why (a 400 for the client)."""


@runtime_checkable
class ServeBackend(Protocol):
    def model_id(self) -> str:
        """The name `/v1/models` lists and every reply carries."""

    def answer(self, request: ServedRequest, cancel: threading.Event) -> Iterator[ReplyItem]:
        """PromptRead, then ReplyStep per token, then ReplyEnd; may raise RequestRefused before the first item.
        `cancel` is read once per step."""

    def close(self) -> None:
        """Let go of the model."""
