"""The conversation as a tree of turns: regenerate, edit and fork make siblings.

A turn is one user message and the reply to it. Every turn knows its parent
(0 is the root: the system prompt), so a regenerated reply, an edited message
and a reply forked at a token are all new turns beside the one they replace,
and every earlier path stays reachable. The transcript shows one path, from
the root to `current`. Turn ids are handed out by the conversation that owns the
tree (model.runtime.conversation), in the order the turns were asked for; a saved
chat keeps its own.

This module is pure bookkeeping; what a move between paths costs the KV cache
is the cache service's job (`CacheService.move`).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from model.errors import ModelError
from model.loading.chat_template import Message, Thought

ROOT = 0


@dataclass(frozen=True, kw_only=True)
class Turn:
    turn_id: int  # in the order asked for, from 1
    parent: int  # the turn this one follows; ROOT for the first
    user: str
    reply_ids: tuple[int, ...]  # the reply as sampled (no stop token)
    reply_text: str
    forked_at: Optional[int] = None  # reply token index where a fork replaced the original
    token_forced: Optional[int] = None  # the id forced there
    thought: Optional[Thought] = None  # a thinking model's reply: its thinking, apart from `reply_text`
    cancelled: bool = False  # the reply was stopped before its end


@dataclass(frozen=True, kw_only=True)
class TurnPlan:
    """What a branch request asks the engine to run: where, what the user said, what the reply starts with."""

    parent: int
    user: str
    reply_prefix: tuple[int, ...] = ()  # forced reply tokens, fed before decoding resumes
    forked_from: Optional[int] = None  # the turn whose reply a fork cuts
    forked_at: Optional[int] = None
    token_forced: Optional[int] = None


class TurnTree:
    def __init__(self, turns: Iterable[Turn] = (), current: int = ROOT):
        """A tree of `turns` (each after its parent), the path shown ending at `current` (ROOT: none)."""
        self.turns: dict[int, Turn] = {}
        for turn in turns:
            self.add(turn)
        self.current = current  # the last turn of the path shown

    def add(self, turn: Turn) -> None:
        if turn.parent != ROOT and turn.parent not in self.turns:
            raise ModelError(f"There is no turn {turn.parent} to follow.")
        self.turns[turn.turn_id] = turn
        self.current = turn.turn_id

    def get(self, turn_id: int) -> Turn:
        turn = self.turns.get(turn_id)
        if turn is None:
            raise ModelError(f"There is no turn {turn_id}: the turns so far are {self._ids()}.")
        return turn

    def knows(self, turn_id: int) -> bool:
        """A turn a path can end at (ROOT: the system prompt alone)."""
        return turn_id == ROOT or turn_id in self.turns

    def _ids(self) -> str:
        return ", ".join(map(str, sorted(self.turns))) or "none"

    def path(self, turn_id: Optional[int] = None) -> list[int]:
        """Turn ids from the root to `turn_id` (the current turn by default)."""
        turn_id = self.current if turn_id is None else turn_id
        out = []
        while turn_id != ROOT:
            out.append(turn_id)
            turn_id = self.get(turn_id).parent
        return out[::-1]

    def messages(self, turn_id: Optional[int] = None) -> list[Message]:
        """The user and assistant messages along a path, as the template renders them."""
        out = []
        for n in self.path(turn_id):
            turn = self.turns[n]
            out += [Message("user", turn.user), Message("assistant", turn.reply_text, turn.reply_ids, turn.thought)]
        return out

    def children(self, turn_id: int) -> list[int]:
        return sorted(n for n, t in self.turns.items() if t.parent == turn_id)

    def siblings(self, turn_id: int) -> list[int]:
        """The turns that share this one's parent, itself included, oldest first."""
        return self.children(self.get(turn_id).parent)

    def leaf(self, turn_id: int) -> int:
        """The newest turn below `turn_id` following the newest child each time."""
        while kids := self.children(turn_id):
            turn_id = kids[-1]
        return turn_id

    def sibling(self, turn_id: int, delta: int) -> Optional[int]:
        """Where ←/→ on a turn's message lands: the newest leaf below the sibling `delta` away (None: no such one)."""
        if turn_id not in self.turns:
            return None
        siblings = self.siblings(turn_id)
        index = siblings.index(turn_id) + delta
        return self.leaf(siblings[index]) if 0 <= index < len(siblings) else None

    # --- the plans for a turn that redoes another (a message's plan is the conversation's) -----

    def regenerate(self, turn_id: int) -> TurnPlan:
        """A new reply to turn `turn_id`'s message."""
        turn = self.get(turn_id)
        return TurnPlan(parent=turn.parent, user=turn.user)

    def fork(self, turn_id: int, at: int, token: int) -> TurnPlan:
        """Turn `turn_id`'s reply cut before its token `at`, `token` forced there."""
        turn = self.get(turn_id)
        n = len(turn.reply_ids)
        if not 0 <= at <= n:
            raise ModelError(f"Turn {turn_id}'s reply has {n} tokens: fork at 0 to {n}.")
        prefix = turn.reply_ids[:at] + (token,)
        return TurnPlan(
            parent=turn.parent,
            user=turn.user,
            reply_prefix=prefix,
            forked_from=turn_id,
            forked_at=at,
            token_forced=token,
        )
