"""The model's own Jinja chat template, rendered so user text can never become markup.

Each message's content is swapped for a unique placeholder before rendering.
The rendered string then splits into the template's markup (encoded with
control tokens recognised) and the messages' content (encoded as plain text),
so `<|im_start|>` typed by a user stays characters, and an assistant reply
keeps the exact token ids it was sampled as.

The template is a program that came with the model: it renders under a budget of time,
steps and size (`template_budget`), checked once on a sample conversation when it is loaded.
"""

import re
from dataclasses import dataclass
from typing import Optional, Union

from jinja2 import TemplateError

from model.errors import ModelError
from model.loading.prompt_encoding import Part, encode_parts
from model.loading.template_budget import TEXT_CHARS, Budget, BudgetedEnvironment, OverBudget, rendering
from model.loading.tokenizer import TextTokenizer

# ChatML, for models that ship no template of their own.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

BUILT_IN = "the built-in ChatML template"
MAX_SOURCE_CHARS = 256_000  # the longest templates in use (tool calling, thinking) are ~20 KB
_SAMPLE = [("user", "Hello"), ("assistant", "Hi! How can I help?"), ("user", "Tell me a story.")]
# What the sample may cost. Real templates render it in 0.03-0.16 ms as 140-150 characters (ChatML,
# Qwen3-style, Gemma 4's 12 KB template); one that takes 0.5 s or writes 100,000 characters around
# three short messages would cost as much on every turn (twice a turn, and its text tokenized): the
# fuzz tests saw such templates load, then take 6-8 s on the first turn.
SAMPLE_TIME_S = 0.5
SAMPLE_CHARS = 100_000
_PLACEHOLDER = "\x00glasschat-{}-{}\x00"  # kind (message, thinking, reply), message index
_PLACEHOLDERS = re.compile("\x00glasschat-(message|thinking|reply)-([0-9]+)\x00")


@dataclass(frozen=True)
class Thought:
    """A reply's thinking, split from its answer where the sampled ids say (see model.runtime.thinking)."""

    text: str  # the thinking, without <think>, </think> and the newlines around it
    ids: tuple[int, ...]  # its ids, likewise
    answer_ids: tuple[int, ...]  # what follows </think>, without the newlines after it


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str  # for a reply that thought: the answer only
    token_ids: Optional[tuple[int, ...]] = None  # an assistant reply's ids as sampled (its thinking included)
    thought: Optional[Thought] = None


def with_thinking(thinking: str, answer: str) -> str:
    """A reply as thinking models write it (Qwen3, SmolLM3) and their templates parse it."""
    return f"<think>\n{thinking}\n</think>\n\n{answer}"


@dataclass(frozen=True)
class ThinkingOf:
    """Where a reply's thinking goes: its template kept it."""

    index: int


@dataclass(frozen=True)
class ReplyOf:
    """Where a whole reply goes as it was written, thinking and markers included."""

    index: int


# Markup text; the index of a message whose content goes here (a reply's answer only,
# if it thought); its thinking; or its whole reply.
Segment = Union[str, int, ThinkingOf, ReplyOf]


def _raise(message):
    raise TemplateError(message)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:100]}" if text else type(exc).__name__


class ChatTemplate:
    """`name` says where the template came from, for the one line a broken one gets."""

    def __init__(self, source: Optional[str], bos_token: str = "", eos_token: str = "", name: str = BUILT_IN):
        self.source = source or CHATML
        self.name = name if source else BUILT_IN
        if not isinstance(self.source, str) or len(self.source) > MAX_SOURCE_CHARS:
            size = f"{len(self.source):,} characters" if isinstance(self.source, str) else "not text"
            raise ModelError(
                f"The chat template ({self.name}) is {size}; glasschat reads templates up to {MAX_SOURCE_CHARS:,}."
            )
        env = BudgetedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        # Compiling (constants are folded then) and the sample render share one budget's clock, so
        # loading costs at most one budget, 2 s, and the sample at most SAMPLE_TIME_S of it; a turn then
        # has its own (the fuzz tests saw a template just under the budget take 2 s compiled, 2 s
        # sampled and 2 s for each of a turn's two renders).
        loading = Budget(TEXT_CHARS)
        try:
            with rendering(loading):
                self.template = env.from_string(self.source)
        except TemplateError as exc:
            raise ModelError(
                f"The model's chat template does not parse ({self.name}: {exc}); use a model with a valid one."
            )
        except (OverBudget, RecursionError, MemoryError, SyntaxError, ValueError, TypeError) as exc:
            raise ModelError(f"The chat template ({self.name}) cannot be compiled ({_first_line(exc)}).")
        self.bos_token, self.eos_token = bos_token, eos_token
        self._try_sample(round(max(0.0, min(SAMPLE_TIME_S, loading.seconds_left())), 2))

    def _try_sample(self, time_s: float) -> None:
        """Render a short conversation once: a template over its budget is refused now, not on the first turn.

        So is one that fails on it with a Python error (a template's own `raise_exception` is not
        a failure here: some templates refuse conversations of some shapes, and say so)."""
        try:
            text = self._render([{"role": r, "content": c} for r, c in _SAMPLE], True, time_s=time_s)
        except ModelError as exc:
            cause = exc.__cause__  # None for the template's own refusals (TemplateError)
            if isinstance(cause, OverBudget):
                raise ModelError(
                    f"The chat template ({self.name}) ran past its budget on a three-message conversation "
                    f"({cause}): glasschat refuses it; use a model whose template renders in time."
                ) from None
            if cause is not None:
                raise ModelError(
                    f"The chat template ({self.name}) fails on a three-message conversation ({_first_line(cause)}): "
                    "glasschat refuses it; use a model with a working template."
                ) from None
            return
        if len(text) > SAMPLE_CHARS:
            raise ModelError(
                f"The chat template ({self.name}) writes {len(text):,} characters around a three-message conversation "
                f"(real ones write a few hundred; the limit is {SAMPLE_CHARS:,}): glasschat refuses it."
            )

    @property
    def has_thinking_switch(self) -> bool:
        """The template takes `enable_thinking` (Qwen3, SmolLM3)."""
        return "enable_thinking" in self.source

    def render(self, messages: list[Message], add_generation_prompt: bool, thinking: Optional[bool] = None) -> str:
        """The template's text with real contents, as a person would read it."""
        contents = [with_thinking(m.thought.text, m.content) if m.thought else m.content for m in messages]
        return self._render(
            [{"role": m.role, "content": c} for m, c in zip(messages, contents)], add_generation_prompt, thinking
        )

    def segments(
        self, messages: list[Message], add_generation_prompt: bool, thinking: Optional[bool] = None
    ) -> list[Segment]:
        """Markup strings and where each message goes, in order.

        A reply that thought is given to the template as thinking models write it, with a
        stand-in for each part, so the template can keep or drop the thinking as it does
        for real text (Qwen3's drops it from every reply before the last user message).
        Kept exactly as written, the whole reply stands in one piece: its sampled ids."""
        stand_ins, whole = [], {}
        for i, m in enumerate(messages):
            content = _PLACEHOLDER.format("message", i)
            if m.thought is not None:
                content = with_thinking(_PLACEHOLDER.format("thinking", i), content)
                whole[content] = _PLACEHOLDER.format("reply", i)
            stand_ins.append({"role": m.role, "content": content})
        text = self._render(stand_ins, add_generation_prompt, thinking)
        for block, reply in whole.items():
            text = text.replace(block, reply)
        out: list[Segment] = []
        at, expected = 0, 0
        for found in _PLACEHOLDERS.finditer(text):
            kind, i = found.group(1), int(found.group(2))
            if found.start() > at:
                out.append(text[at : found.start()])
            at = found.end()
            if kind == "thinking":
                out.append(ThinkingOf(i))
                continue
            if i != expected:  # each message's content once, in order
                break
            expected += 1
            out.append(i if kind == "message" else ReplyOf(i))
        if expected != len(messages):
            raise ModelError("The chat template drops or rewrites message text; glasschat cannot use it safely.")
        if at < len(text):
            out.append(text[at:])
        return out

    def _render(
        self,
        messages: list[dict],
        add_generation_prompt: bool,
        thinking: Optional[bool] = None,
        time_s: Optional[float] = None,
    ) -> str:
        # `enable_thinking` only when set: templates test `enable_thinking is defined`.
        switch = {} if thinking is None else {"enable_thinking": thinking}
        given = sum(len(m["content"]) for m in messages)
        try:
            with rendering(Budget(TEXT_CHARS + 2 * given, time_s=time_s)):
                return self.template.render(
                    messages=messages,
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                    **switch,
                )
        except OverBudget as exc:
            raise ModelError(
                f"The chat template ({self.name}) ran past its budget on this conversation ({exc}): "
                "the message was not sent, and the conversation is kept."
            ) from exc
        except TemplateError as exc:
            raise ModelError(f"The model's chat template refused this conversation ({self.name}): {exc}")
        except Exception as exc:  # a template is a program: TypeError, RecursionError, ... from its own code
            raise ModelError(
                f"The chat template ({self.name}) failed on this conversation ({_first_line(exc)}): "
                "the message was not sent, and the conversation is kept."
            ) from exc


def encode_conversation(
    template: ChatTemplate,
    tokenizer: TextTokenizer,
    messages: list[Message],
    add_generation_prompt: bool,
    thinking: Optional[bool] = None,
) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation, and where each message's content ends.

    Markup is encoded with control tokens recognised; user and system text as
    plain text; assistant replies reuse their sampled ids when known (see
    `prompt_encoding` for how the parts join). BOS goes first when the
    vocabulary asks for it and the template did not write it.
    """
    parts: list[Part] = []
    content_parts: list[int] = []
    for seg in template.segments(messages, add_generation_prompt, thinking):
        if isinstance(seg, str):
            parts.append(("markup", seg))
            continue
        if isinstance(seg, ThinkingOf):
            parts.append(("ids", messages[seg.index].thought.ids))
            continue
        message = messages[seg.index if isinstance(seg, ReplyOf) else seg]
        if message.thought is not None and not isinstance(seg, ReplyOf):
            parts.append(("ids", message.thought.answer_ids))
        elif message.token_ids is not None:
            parts.append(("ids", tuple(message.token_ids)))
        else:
            parts.append(("text", message.content))
        content_parts.append(len(parts) - 1)
    ids, ends = encode_parts(tokenizer, parts)
    full = tokenizer.with_bos(ids) if ids else ids
    shift = len(full) - len(ids)
    return full, [ends[i] + shift for i in content_parts]
