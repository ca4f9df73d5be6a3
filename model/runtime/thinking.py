"""Thinking models: where a reply's thinking ends and its answer begins, token by token.

Qwen3, SmolLM3 and the DeepSeek-R1 distills write `<think> ... </think>` before the
answer, each marker one token of their vocabulary. The engine marks every generated
token as thinking or answer as it streams (`ThinkingTracker`), and splits a finished reply's
ids (`split_reply`) so the chat template can keep or drop the thinking in later turns,
as the model was trained (Qwen3's template drops it from every earlier reply). A prompt
may open the block itself (DeepSeek-R1's template ends with `<think>\\n`), or close an
empty one when thinking is off (Qwen3 with `enable_thinking=False`).

Thinking is switched off through the template's `enable_thinking` where it has one;
otherwise, for a vocabulary with the markers, with Qwen's own soft switch `/no_think`
at the end of the user's message.
"""

from dataclasses import dataclass
from typing import Optional

from model.loading.chat_template import ChatTemplate, Thought

OPEN, CLOSE = "<think>", "</think>"
SOFT_OFF = " /no_think"  # Qwen3's switch in a message (its model card), for templates without enable_thinking


@dataclass(frozen=True)
class Markers:
    open_id: int
    close_id: int


def markers(tokenizer) -> Optional[Markers]:
    """The model's thinking markers, if its vocabulary has both as tokens."""
    open_id, close_id = tokenizer.token_id(OPEN), tokenizer.token_id(CLOSE)
    return Markers(open_id, close_id) if open_id is not None and close_id is not None else None


def switch(template: ChatTemplate, found: Optional[Markers]) -> str:
    """How thinking is turned off: "enable_thinking", "/no_think", or "" (this model does not think)."""
    if found is None:
        return ""
    return "enable_thinking" if template.has_thinking_switch else "/no_think"


def opens_inside(prompt_ids: list[int], found: Optional[Markers]) -> bool:
    """The prompt ends inside a thinking block (its template wrote `<think>`): the reply starts thinking."""
    if found is None:
        return False
    last_open = max((i for i, t in enumerate(prompt_ids) if t == found.open_id), default=-1)
    last_close = max((i for i, t in enumerate(prompt_ids) if t == found.close_id), default=-1)
    return last_open > last_close


class ThinkingTracker:
    """One reply as it streams: is each token thinking, and the two texts so far."""

    def __init__(self, found: Optional[Markers], inside: bool = False):
        self.found = found
        self.inside = inside
        self.thinking_tokens = 0  # the markers included
        self.thinking_text = ""
        self.answer_text = ""

    def is_marker(self, token_id: int) -> bool:
        return self.found is not None and token_id in (self.found.open_id, self.found.close_id)

    def step(self, token_id: int, count: bool = True) -> bool:
        """True if this token belongs to the thinking (both markers do); `count=False` for a fork's kept start."""
        if self.found is not None and token_id == self.found.open_id:
            self.inside = True
        thinking = self.inside
        if self.found is not None and token_id == self.found.close_id:
            self.inside = False
        self.thinking_tokens += thinking and count
        return thinking

    def add_text(self, text: str, thinking: bool) -> None:
        if thinking:
            self.thinking_text += text
        else:
            self.answer_text += text

    @property
    def thought(self) -> bool:
        return self.thinking_tokens > 0

    def answer(self) -> str:
        """The answer as the user reads it: after a thought, without the newlines that separate them."""
        return self.answer_text.lstrip("\n") if self.thought else self.answer_text

    def thinking(self) -> str:
        return self.thinking_text.strip("\n")


def _newline(tokenizer, token_id: int) -> bool:
    data = tokenizer.token_bytes(token_id)
    return bool(data) and set(data) <= {0x0A, 0x0D}


def _strip_newlines(tokenizer, ids: list[int], start: bool = True, end: bool = True) -> list[int]:
    a, b = 0, len(ids)
    while start and a < b and _newline(tokenizer, ids[a]):
        a += 1
    while end and b > a and _newline(tokenizer, ids[b - 1]):
        b -= 1
    return ids[a:b]


def split_reply(reply_ids: list[int], found: Optional[Markers], tokenizer, inside: bool = False) -> Optional[Thought]:
    """A reply's thinking and answer, from its sampled ids; None if it did not think.

    A reply stopped while thinking is all thinking, with an empty answer."""
    if found is None:
        return None
    ids = list(reply_ids)
    start = ids.index(found.open_id) + 1 if found.open_id in ids else (0 if inside else None)
    if start is None:
        return None
    close = ids.index(found.close_id, start) if found.close_id in ids[start:] else len(ids)
    thinking = _strip_newlines(tokenizer, ids[start:close])
    answer = _strip_newlines(tokenizer, ids[close + 1 :], end=False)
    return Thought(tokenizer.decode(thinking), tuple(thinking), tuple(answer))
