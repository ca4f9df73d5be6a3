"""One conversation: its messages, its KV cache, and what each turn must prefill.

`history` is every token ever fed into the cache, in order. Because eviction
always drops the oldest tokens after the sink, the cache holds exactly
`history[:keep] + history[keep + evicted_total:]`. Each turn renders the whole
conversation through the chat template (assistant replies as their sampled
ids), checks that `history` is its prefix, and prefills only what follows.
"""

from dataclasses import dataclass
from typing import Optional

from model.cache.kv_cache import KVCache
from model.errors import ModelError
from model.loading.chat_template import ChatTemplate, Message, encode_conversation
from model.loading.prompt_encoding import encode_parts
from model.runtime.settings import CacheSettings

MIN_CAPACITY = 64  # below this a reply barely fits beside the system prompt

MIN_SINK = 4  # attention sinks: the first few tokens soak up attention (StreamingLLM)
REPLY_ROOM = 32  # a message must leave at least this much of the window for the reply


@dataclass(frozen=True)
class TurnPrompt:
    ids: list[int]  # to prefill this turn
    reused: int  # tokens already held in the cache
    note: str = ""  # a warning for the user, e.g. a message longer than the cache


def sink_length(template: ChatTemplate, tokenizer, system: Optional[str]) -> int:
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
    segs = template.segments(probe, add_generation_prompt=False)
    first_user = len(probe) - 3
    cut = segs.index(first_user)
    before_first, before_third = segs[cut - 1], segs[segs.index(len(probe) - 1) - 1]
    if not isinstance(before_first, str) or not isinstance(before_third, str):
        return MIN_SINK
    header = 0
    while header < min(len(before_first), len(before_third)) and before_first[-1 - header] == before_third[-1 - header]:
        header += 1
    prefix = segs[: cut - 1] + [before_first[: len(before_first) - header]]
    parts = [("markup", seg) if isinstance(seg, str) else ("text", probe[seg].content) for seg in prefix]
    ids, _ = encode_parts(tokenizer, parts)
    return max(MIN_SINK, len(tokenizer.with_bos(ids)))  # the conversation's BOS, when llama.cpp would add one


class Conversation:
    def __init__(
        self, template: ChatTemplate, tokenizer, cache: KVCache, settings: CacheSettings, system: Optional[str] = None
    ):
        self.template, self.tokenizer, self.cache, self.settings = template, tokenizer, cache, settings
        self.reset(system)

    def reset(self, system: Optional[str] = None) -> None:
        self.system = system
        self.messages: list[Message] = [Message("system", system)] if system else []
        self.history: list[int] = []
        self.cache.reset()
        keep = self.settings.keep
        if keep is not None and not 0 <= keep <= self.cache.capacity // 2:
            raise ModelError(f"--keep {keep} must be between 0 and half the cache ({self.cache.capacity // 2}).")
        if keep is None:
            # A system prompt longer than half the cache is pinned only in part.
            keep = min(sink_length(self.template, self.tokenizer, system), self.cache.capacity // 2)
        self.cache.keep = keep

    def held_ids(self) -> list[int]:
        keep, gone = self.cache.keep, self.cache.evicted_total
        return self.history[:keep] + self.history[keep + gone :]

    def prompt_for(self, user_text: str) -> TurnPrompt:
        """What this turn must prefill, and a note if it cannot all stay in the cache.

        Callers pass the text through `tokenizer.readable` first (see `add_exchange`)."""
        messages = self.messages + [Message("user", user_text)]
        ids, _ = encode_conversation(self.template, self.tokenizer, messages, add_generation_prompt=True)
        if ids[: len(self.history)] != self.history:
            # A template that rewrites earlier turns (some strip old reasoning):
            # the cache no longer matches, so start it over.
            self.history = []
            self.cache.reset()
        new = ids[len(self.history) :]
        room = self.cache.window - REPLY_ROOM
        note = ""
        if len(new) > room:
            # Still answered: prefill runs in chunks and evicts as it goes.
            note = (
                f"This message is {len(new)} tokens, more than the {room} the cache can hold beside a "
                f"reply: its start is evicted as it is read. Restart with a larger --max-kv-size to keep it all."
            )
        return TurnPrompt(new, self.cache.length, note)

    def fed(self, ids: list[int]) -> None:
        """Record tokens the cache has taken in."""
        self.history.extend(ids)

    def add_exchange(self, user_text: str, reply_ids: list[int], reply_text: str) -> None:
        """Close the turn: the user message and the reply as the user saw it."""
        self.messages.append(Message("user", user_text))
        self.messages.append(Message("assistant", reply_text, tuple(reply_ids)))
