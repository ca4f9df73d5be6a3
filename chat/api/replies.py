"""OpenAI's JSON shapes for a chat completion: the whole reply, a streamed chunk, logprobs and usage.

`usage.prompt_tokens` is every token of the prompt; `prompt_tokens_details.cached_tokens`
those already in the cache, so `prompt_tokens - cached_tokens` is what this request
prefilled: the Prefill panel's "prompt tokens" for the same turn.
"""

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

from .backend import PromptRead, ReplyEnd, ReplyStep, TopLogprob

EXCLUDED_LOGPROB = -9999.0  # OpenAI's stand-in for a token the filters left no chance (log 0 is not JSON)


def finish_reason(end: ReplyEnd, stopped_by_string: bool) -> str:
    if stopped_by_string or end.finish_reason == "cancelled":
        return "stop"
    return end.finish_reason


def _logprob(value: float) -> float:
    return value if math.isfinite(value) else EXCLUDED_LOGPROB


def _entry(token: TopLogprob) -> dict:
    return {"token": token.token, "logprob": _logprob(token.logprob), "bytes": list(token.bytes)}


def logprobs_content(step: ReplyStep, top: int) -> dict:
    """One token's logprobs entry: the token chosen, and the `top` most likely (best first)."""
    return {**_entry(step.token), "top_logprobs": [_entry(t) for t in step.top[:top]]}


def usage(prompt: PromptRead, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt.prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": prompt.cached_tokens},
    }


@dataclass
class Reply:
    """One completion as it is built: its id and clock, and (for a whole reply) its text and logprobs."""

    model: str
    top_logprobs: Optional[int]  # None: no logprobs asked for
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))
    text: list[str] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)

    def add(self, step: ReplyStep) -> None:
        self.text.append(step.text)
        if self.top_logprobs is not None:
            self.logprobs.append(logprobs_content(step, self.top_logprobs))

    def whole(self, finish: str, prompt: PromptRead, completion_tokens: int) -> dict:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(self.text)},
            "logprobs": {"content": self.logprobs} if self.top_logprobs is not None else None,
            "finish_reason": finish,
        }
        return {**self._head("chat.completion"), "choices": [choice], "usage": usage(prompt, completion_tokens)}

    def chunk(self, delta: dict, step: Optional[ReplyStep] = None, finish: Optional[str] = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if step is not None and self.top_logprobs is not None:
            choice["logprobs"] = {"content": [logprobs_content(step, self.top_logprobs)]}
        return {**self._head("chat.completion.chunk"), "choices": [choice]}

    def usage_chunk(self, prompt: PromptRead, completion_tokens: int) -> dict:
        """stream_options.include_usage: the last chunk, no choices, the usage."""
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": usage(prompt, completion_tokens)}

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def event(obj: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"


def models_list(model: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "glasschat"}]}
