"""A chat-completions body checked field by field: a `ServedRequest`, or an `ApiError` naming the field.

The ranges are OpenAI's own (temperature 0-2, top_p 0-1, top_logprobs 0-20, at most 4
stop strings), so a client that works against OpenAI gets the same 400s here. Fields a
client may send but glasschat does not act on are refused when they would change the
answer (n > 1, tools, non-zero presence/frequency penalties), and ignored when they
would not (user-facing metadata, `store`, `parallel_tool_calls`).
"""

import json
import math
from dataclasses import dataclass
from typing import Any, Optional

from .backend import ROLES, ApiMessage, ReplySettings, ServedRequest

MAX_TOP_LOGPROBS = 20  # OpenAI's limit
MAX_STOP_STRINGS = 4  # OpenAI's limit


@dataclass(kw_only=True, eq=False)  # not frozen: raising sets __traceback__ on it
class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    status: int
    message: str
    param: Optional[str] = None
    code: Optional[str] = None
    type: str = "invalid_request_error"

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(param: Optional[str], message: str, code: Optional[str] = None) -> ApiError:
    return ApiError(status=400, message=message, param=param, code=code)


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(None, f"The body is not valid JSON ({exc}): send a JSON object.", "invalid_json")
    if not isinstance(body, dict):
        raise bad(None, "The body must be a JSON object.", "invalid_json")
    return body


def chat_request(body: dict) -> ServedRequest:
    """The request a chat-completions body asks for; raises ApiError on the first field that is wrong."""
    _refuse_what_would_change_the_answer(body)
    logprobs = _optional(body, "logprobs", bool)
    top_logprobs = _number(body, "top_logprobs", int, 0, MAX_TOP_LOGPROBS)
    if top_logprobs is not None and not logprobs:
        raise bad("top_logprobs", "top_logprobs needs logprobs: true.")
    max_tokens = _number(body, "max_completion_tokens", int, 1, None)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", int, 1, None)
    settings = ReplySettings(
        temperature=_number(body, "temperature", float, 0.0, 2.0),
        top_p=_number(body, "top_p", float, 0.0, 1.0, low_open=True),
        top_k=_number(body, "top_k", int, 0, None),
        min_p=_number(body, "min_p", float, 0.0, 1.0),
        repetition_penalty=_number(body, "repetition_penalty", float, 0.0, None, low_open=True),
        max_tokens=max_tokens,
        seed=_number(body, "seed", int, None, None),
        top_logprobs=(top_logprobs or 0) if logprobs else None,
        stop=_stop(body.get("stop")),
    )
    options = _optional(body, "stream_options", dict) or {}
    user = _optional(body, "user", str)
    return ServedRequest(
        messages=_messages(body.get("messages")),
        settings=settings,
        stream=bool(_optional(body, "stream", bool)),
        include_usage=bool(options.get("include_usage")),
        user=user or None,
    )


def _refuse_what_would_change_the_answer(body: dict) -> None:
    n = _number(body, "n", int, 1, None)
    if n not in (None, 1):
        raise bad("n", "n must be 1: glasschat answers with one choice.")
    if body.get("tools") or body.get("functions"):
        raise bad("tools", "Tools and functions are not supported: send the conversation as messages.")
    for name in ("presence_penalty", "frequency_penalty"):
        value = _number(body, name, float, -2.0, 2.0)
        if value:
            raise bad(name, f"{name} is not supported: use repetition_penalty (1 is none, CTRL's rule).")


def _messages(value: Any) -> tuple[ApiMessage, ...]:
    if value is None:
        raise bad("messages", "messages is required: a list of {role, content} objects.")
    if not isinstance(value, list):
        raise bad("messages", "messages must be a list of {role, content} objects.")
    if not value:
        raise bad("messages", "messages must not be empty.")
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad(where, f"{where} must be an object with a role and a content.")
        role = message.get("role")
        if role not in ROLES:
            known = ", ".join(ROLES)
            raise bad(f"{where}.role", f"{where}.role is {json.dumps(role)}: it must be one of {known}.")
        out.append(ApiMessage(role=role, content=_content(message.get("content"), f"{where}.content")))
    if out[-1].role == "assistant":
        raise bad("messages", "The last message is the assistant's: end with a user message to answer.")
    return tuple(out)


def _content(value: Any, where: str) -> str:
    """A string, or a list of text parts joined (the shape newer clients send)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(where, f"{where} may hold only text parts ({{type: text, text: ...}}).")
            texts.append(part["text"])
        return "".join(texts)
    raise bad(where, f"{where} must be a string or a list of text parts.")


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad("stop", "stop must be a non-empty string or a list of them.")
    if len(stops) > MAX_STOP_STRINGS:
        raise bad("stop", f"stop takes at most {MAX_STOP_STRINGS} strings.")
    return tuple(stops)


def _optional(body: dict, name: str, kind: type) -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise bad(name, f"{name} must be {_kind_name(kind)}.")
    return value


def _number(
    body: dict, name: str, kind: type, low: Optional[float], high: Optional[float], low_open: bool = False
) -> Any:
    """A number in [low, high] (or (low, high] with `low_open`); None when absent. JSON's true is not 1 here."""
    value = body.get(name)
    if value is None:
        return None
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not integral):
        raise bad(name, f"{name} must be {_kind_name(kind)}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise bad(name, f"{name} must be a finite number.")
    below = low is not None and (value <= low if low_open else value < low)
    if below or (high is not None and value > high):
        raise bad(name, f"{name} is {value}: it must be {_range(low, high, low_open)}.")
    return kind(value)


def _range(low: Optional[float], high: Optional[float], low_open: bool) -> str:
    if high is None:
        return f"{'over' if low_open else 'at least'} {low:g}"
    return f"{'over' if low_open else 'from'} {low:g} {'up ' if low_open else ''}to {high:g}"


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "an object"}[kind]
