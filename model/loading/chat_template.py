"""The model's own Jinja chat template, rendered so user text can never become markup.

Each message's content is swapped for a unique placeholder before rendering.
The rendered string then splits into the template's markup (encoded with
control tokens recognised) and the messages' content (encoded as plain text),
so `<|im_start|>` typed by a user stays characters, and an assistant reply
keeps the exact token ids it was sampled as.
"""

from dataclasses import dataclass
from typing import Optional, Union

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from model.errors import ModelError
from model.loading.prompt_encoding import Part, encode_parts
from model.loading.tokenizer import TextTokenizer

# ChatML, for models that ship no template of their own.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_PLACEHOLDER = "\x00glasschat-message-{}\x00"


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str
    token_ids: Optional[tuple[int, ...]] = None  # an assistant reply's ids as sampled


Segment = Union[str, int]  # markup text, or the index of a message whose content goes here


def _raise(message):
    raise TemplateError(message)


class ChatTemplate:
    def __init__(self, source: Optional[str], bos_token: str = "", eos_token: str = ""):
        self.source = source or CHATML
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        try:
            self.template = env.from_string(self.source)
        except TemplateError as exc:
            raise ModelError(f"The model's chat template does not parse ({exc}); use a model with a valid one.")
        self.bos_token, self.eos_token = bos_token, eos_token

    def render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        """The template's text with real contents, as a person would read it."""
        return self._render([{"role": m.role, "content": m.content} for m in messages], add_generation_prompt)

    def segments(self, messages: list[Message], add_generation_prompt: bool) -> list[Segment]:
        """Markup strings and message indices, in order."""
        stand_ins = [{"role": m.role, "content": _PLACEHOLDER.format(i)} for i, m in enumerate(messages)]
        text = self._render(stand_ins, add_generation_prompt)
        out: list[Segment] = []
        for i in range(len(messages)):
            marker = _PLACEHOLDER.format(i)
            before, found, text = text.partition(marker)
            if not found:
                raise ModelError("The chat template drops or rewrites message text; glasschat cannot use it safely.")
            if before:
                out.append(before)
            out.append(i)
        if text:
            out.append(text)
        return out

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        try:
            return self.template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as exc:
            raise ModelError(f"The model's chat template refused this conversation: {exc}")


def encode_conversation(
    template: ChatTemplate, tokenizer: TextTokenizer, messages: list[Message], add_generation_prompt: bool
) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation, and where each message's content ends.

    Markup is encoded with control tokens recognised; user and system text as
    plain text; assistant replies reuse their sampled ids when known (see
    `prompt_encoding` for how the parts join). BOS goes first when the
    vocabulary asks for it and the template did not write it.
    """
    parts: list[Part] = []
    content_parts: list[int] = []
    for seg in template.segments(messages, add_generation_prompt):
        if isinstance(seg, str):
            parts.append(("markup", seg))
            continue
        message = messages[seg]
        if message.token_ids is not None:
            parts.append(("ids", tuple(message.token_ids)))
        else:
            parts.append(("text", message.content))
        content_parts.append(len(parts) - 1)
    ids, ends = encode_parts(tokenizer, parts)
    full = tokenizer.with_bos(ids) if ids else ids
    shift = len(full) - len(ids)
    return full, [ends[i] + shift for i in content_parts]
