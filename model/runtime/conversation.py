"""One conversation: its messages, its KV cache, and what each turn must prefill.

`history` is every token ever fed into the cache, in order. Because eviction
always drops the oldest tokens after the sink, the cache holds exactly
`history[:keep] + history[keep + evicted_total:]`. Each turn renders its path
of the conversation through the chat template (assistant replies as their
sampled ids), keeps the longest prefix it shares with `history`, and prefills
only what follows. Moving to another branch is the same diff: the cache is
rolled back to the common prefix when it still holds it, and rebuilt from the
sink when that point was evicted since (see `move_to`).

A template may also render an earlier turn differently from how it was fed: Qwen3's
drops the thinking of every reply before the last user message, and with thinking off
the generation prompt's empty `<think></think>` is not part of the reply it precedes.
The same diff handles it: the cache goes back to the start of that reply, which is
prefilled again as the template now writes it, and `rolled_back` says how much went.
(mlx-lm's prompt cache starts over here.)
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Optional

from model.cache.kv_cache import KVCache
from model.cache.settings import CacheSettings
from model.loading.chat_template import ChatTemplate, Message, encode_conversation
from model.loading.prompt_encoding import encode_parts
from model.loading.tokenizer import TextTokenizer
from model.runtime import thinking
from model.runtime.branches import Turn, TurnTree

MIN_SINK = 4  # attention sinks: the first few tokens soak up attention (StreamingLLM)
REPLY_ROOM = 32  # a message must leave at least this much of the window for the reply


@dataclass(frozen=True)
class TurnPrompt:
    ids: list[int]  # to prefill this turn
    reused: int  # tokens already held in the cache
    note: str = ""  # a warning for the user, e.g. a message longer than the cache
    rebuilt: bool = False  # the branch point had been evicted: the cache was read again from the sink
    rolled_back: int = 0  # tokens taken off the cache first (another branch, or a turn the template rewrote)
    user: str = ""  # the message as the model reads it (with /no_think when thinking is off that way)
    opens_thinking: bool = False  # the prompt (before a fork's forced start) ends inside a <think> block


def sink_length(template: ChatTemplate, tokenizer: TextTokenizer, system: Optional[str]) -> int:
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


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Conversation:
    def __init__(
        self,
        template: ChatTemplate,
        tokenizer: TextTokenizer,
        cache: KVCache,
        settings: CacheSettings,
        system: Optional[str] = None,
    ):
        self.template, self.tokenizer, self.cache, self.settings = template, tokenizer, cache, settings
        self.markers = thinking.markers(tokenizer)
        self.thinking_switch = thinking.switch(template, self.markers)
        self.thinking: Optional[bool] = None  # None: as the template has it; False turns thinking off
        self.reset(system)

    def reset(self, system: Optional[str] = None) -> None:
        self.system = system
        self.preamble: list[Message] = [Message("system", system)] if system else []
        self.tree = TurnTree()
        self.history: list[int] = []
        self.cache.reset()
        keep = self.settings.keep  # checked when the cache was made (see kv_factory)
        if keep is None:
            # A system prompt longer than half the cache is pinned only in part.
            keep = min(sink_length(self.template, self.tokenizer, system), self.cache.capacity // 2)
        self.cache.keep = keep

    @property
    def messages(self) -> list[Message]:
        """The path shown, as the template renders it: system prompt, then each turn's message and reply."""
        return self.preamble + self.tree.messages()

    def restore(self, messages: list[Message], first_number: int) -> int:
        """A saved single-path conversation becomes a chain of turns numbered from `first_number`; returns how many."""
        turns, user = [], None
        for m in messages:
            if m.role == "user":
                user = m.content
            elif m.role == "assistant" and user is not None:
                turns.append(Turn(len(turns) + 1, len(turns), user, tuple(m.token_ids or ()), m.content))
                user = None
            elif not turns:
                self.preamble.append(m)  # e.g. a stored system message before the first turn
        self.restore_tree(turns, len(turns), first_number - 1)
        return len(turns)

    def restore_tree(self, turns: Sequence[Turn], current: int, offset: int) -> None:
        """A saved tree joins the conversation (see `TurnTree.graft`); the cache is left to the caller to fill."""
        # A saved reply's thinking is in its ids: split as at the end of its turn.
        split = [replace(t, thought=thinking.split_reply(t.reply_ids, self.markers, self.tokenizer)) for t in turns]
        self.tree.graft(split, current, offset)

    def held_ids(self) -> list[int]:
        keep, gone = self.cache.keep, self.cache.evicted_total
        return self.history[:keep] + self.history[keep + gone :]

    def render(self, parent: int, user_text: Optional[str] = None, reply_prefix: tuple[int, ...] = ()) -> list[int]:
        """Token ids of the path ending at `parent`, then (if given) a new user message and a reply's start."""
        messages = self.preamble + self.tree.messages(parent)
        if user_text is not None:
            messages = messages + [Message("user", user_text)]
        switch = self.thinking if self.thinking_switch == "enable_thinking" else None
        ids, _ = encode_conversation(self.template, self.tokenizer, messages, user_text is not None, switch)
        return ids + list(reply_prefix)

    def move_to(self, target: list[int], need_logits: bool = True) -> TurnPrompt:
        """Bring the cache to the longest prefix of `target` it can keep; what follows is left to prefill.

        The cache holds `history` minus what was evicted. If the common prefix
        ends after the evicted block, rolling the cache back to it is exact
        (nothing after it was ever seen by what is kept). If it ends inside the
        evicted block, or further back than a sliding-window layer still holds,
        those keys are gone: the sink is kept (it never moves) and the rest of
        `target` is read again, as a fresh prefill of that path would. A turn needs the logits after `target`'s last token, so at
        least one token is always left to feed when `need_logits`."""
        common = common_prefix(self.history, target)
        if need_logits and common == len(target):
            common = max(0, common - 1)
        rebuilt = False
        if common < len(self.history):
            back = len(self.history) - common
            if common >= self.cache.keep + self.cache.evicted_total and self.cache.can_rollback(back):
                self.cache.rollback(back)
            else:
                # Evicted, or dropped by a sliding-window layer (it keeps little more than its window).
                rebuilt = self.cache.evicted_total > 0 or common > self.cache.keep
                common = min(common, self.cache.keep)
                self.cache.restart_at(common)
            self.history = self.history[:common]
        return TurnPrompt(target[common:], self.cache.length, rebuilt=rebuilt)

    def prompt_for(
        self, user_text: str, parent: Optional[int] = None, reply_prefix: tuple[int, ...] = ()
    ) -> TurnPrompt:
        """What this turn must prefill, and a note if it cannot all stay in the cache.

        The turn follows `parent` (the current turn by default); a fork passes
        the reply's start it forces. Callers pass the text through
        `tokenizer.readable` first (see `Engine.answer`)."""
        parent = self.tree.current if parent is None else parent
        if self.thinking is False and self.thinking_switch == "/no_think" and not user_text.endswith(thinking.SOFT_OFF):
            user_text += thinking.SOFT_OFF
        held = len(self.history)
        # Whether the reply starts inside a <think> block is the whole prompt's to say, not the part prefilled.
        opens = thinking.opens_inside(self.render(parent, user_text), self.markers)
        prompt = self.move_to(self.render(parent, user_text, reply_prefix))
        notes = []
        if prompt.rebuilt:
            notes.append(
                "That point of the conversation had been evicted from the cache since: "
                f"it was rebuilt from the system prompt ({len(prompt.ids)} tokens read again)."
            )
        room = self.cache.window - REPLY_ROOM
        if len(prompt.ids) > room:
            # Still answered: prefill runs in chunks and evicts as it goes.
            notes.append(
                f"This message is {len(prompt.ids)} tokens, more than the {room} the cache can hold beside a "
                f"reply: its start is evicted as it is read. Restart with a larger --max-kv-size to keep it all."
            )
        return TurnPrompt(
            prompt.ids, prompt.reused, " ".join(notes), prompt.rebuilt, held - len(self.history), user_text, opens
        )

    def fed(self, ids: list[int]) -> None:
        """Record tokens the cache has taken in."""
        self.history.extend(ids)

    def add_turn(self, turn: Turn) -> None:
        """Close the turn: the user message and the reply as the user saw it, on the tree."""
        self.tree.add(turn)
