"""A model's text side: its tokenizer and chat template, which turn a conversation into token ids.

The tokenizer is Rust and the template Jinja: no MLX, so the thread that owns a
conversation renders it there, and the engine thread only ever sees ids. The engine
builds one per loaded model and hands it out (`ChatEngine.text()`).
"""

from collections.abc import Sequence
from typing import Optional

from model.loading.chat_template import ChatTemplate, Message, Thought, encode_conversation
from model.loading.prompt_encoding import encode_parts
from model.loading.tokenizer import TextTokenizer
from model.runtime import thinking
from model.runtime.model_source import stop_ids

MIN_SINK = 4  # attention sinks: the first few tokens soak up attention (StreamingLLM)


class ChatText:
    def __init__(self, template: ChatTemplate, tokenizer: TextTokenizer, vocab_size: int):
        self.template, self.tokenizer = template, tokenizer
        self.vocab_size = vocab_size  # rows of the model's embedding (a padded vocabulary has more than the tokenizer)
        self.stop_ids = frozenset(stop_ids(tokenizer))
        self.markers = thinking.markers(tokenizer)
        self.thinking_switch = thinking.switch(template, self.markers)  # how thinking turns off, "" if never

    def readable(self, text: str) -> str:
        """`text` as this model reads it: characters its vocabulary cannot spell become U+FFFD."""
        return self.tokenizer.readable(text)

    def render(
        self, messages: Sequence[Message], generation_prompt: bool, thinking_on: Optional[bool] = None
    ) -> list[int]:
        """Token ids of `messages` (assistant replies as their sampled ids); `thinking_on` for templates with
        `enable_thinking` (None: as the template has it)."""
        switch = thinking_on if self.thinking_switch == "enable_thinking" else None
        ids, _ = encode_conversation(self.template, self.tokenizer, list(messages), generation_prompt, switch)
        return ids

    def sink_length(self, system: Optional[str]) -> int:
        """Tokens before the first user turn: the system prompt and its markup.

        Found by rendering a probe conversation: the markup before the first user
        message ends with the user header, which also precedes the second user
        message; what comes before that header is the system block.
        """
        probe = ([Message("system", system)] if system else []) + [
            Message("user", "a"),
            Message("assistant", "b"),
            Message("user", "c"),
        ]
        segs = self.template.segments(probe, add_generation_prompt=False)
        first_user = len(probe) - 3
        cut = segs.index(first_user)
        before_first, before_third = segs[cut - 1], segs[segs.index(len(probe) - 1) - 1]
        if not isinstance(before_first, str) or not isinstance(before_third, str):
            return MIN_SINK
        header = 0
        shorter = min(len(before_first), len(before_third))
        while header < shorter and before_first[-1 - header] == before_third[-1 - header]:
            header += 1
        prefix = segs[: cut - 1] + [before_first[: len(before_first) - header]]
        parts = [("markup", seg) if isinstance(seg, str) else ("text", probe[seg].content) for seg in prefix]
        ids, _ = encode_parts(self.tokenizer, parts)
        return max(MIN_SINK, len(self.tokenizer.with_bos(ids)))  # the conversation's BOS, when llama.cpp adds one

    def opens_thinking(self, prompt_ids: list[int]) -> bool:
        """The prompt ends inside a <think> block (its template wrote `<think>`): the reply starts thinking."""
        return thinking.opens_inside(prompt_ids, self.markers)

    def split_reply(self, reply_ids: Sequence[int], inside: bool = False) -> Optional[Thought]:
        """A reply's thinking apart from its answer (None if it did not think)."""
        return thinking.split_reply(list(reply_ids), self.markers, self.tokenizer, inside)
