"""The conversation as a tree of turns: regenerate, edit and fork make siblings.

A turn is one user message and the reply to it. Every turn knows its parent
(0 is the root: the system prompt), so a regenerated reply, an edited message
and a reply forked at a token are all new turns beside the one they replace,
and every earlier path stays reachable. The transcript shows one path, from
the root to `current`. Turns are numbered in the order they ran, the same
numbers the engine's events carry.

This module is pure bookkeeping; what a move between paths costs the KV cache
is `Conversation.move_to`'s job.
"""

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Optional

from model.errors import ModelError
from model.loading.chat_template import Message, Thought

ROOT = 0


@dataclass(frozen=True)
class Turn:
    number: int  # in run order, from 1
    parent: int  # the turn this one follows; ROOT for the first
    user: str
    reply_ids: tuple[int, ...]  # the reply as sampled (no stop token)
    reply_text: str
    forked_at: Optional[int] = None  # reply token index where a fork replaced the original
    token_forced: Optional[int] = None  # the id forced there
    thought: Optional[Thought] = None  # a thinking model's reply: its thinking, apart from `reply_text`


@dataclass(frozen=True)
class TurnPlan:
    """What a branch request asks the engine to run: where, what the user said, what the reply starts with."""

    parent: int
    user: str
    reply_prefix: tuple[int, ...] = ()  # forced reply tokens, fed before decoding resumes
    forked_at: Optional[int] = None
    token_forced: Optional[int] = None


class TurnTree:
    def __init__(self):
        self.turns: dict[int, Turn] = {}
        self.current = ROOT  # the last turn of the path shown

    def add(self, turn: Turn) -> None:
        if turn.parent != ROOT and turn.parent not in self.turns:
            raise ModelError(f"There is no turn {turn.parent} to follow.")
        self.turns[turn.number] = turn
        self.current = turn.number

    def graft(self, turns: Iterable[Turn], current: int, offset: int) -> None:
        """Saved turns (numbered from 1, each after its parent) join as turn `number + offset`; the path
        shown ends at `current` (ROOT: none). The saved numbers go on after the ones already run."""

        def moved(number: int) -> int:
            return ROOT if number == ROOT else number + offset

        for turn in turns:
            self.add(replace(turn, number=moved(turn.number), parent=moved(turn.parent)))
        self.current = moved(current)

    def get(self, number: int) -> Turn:
        turn = self.turns.get(number)
        if turn is None:
            raise ModelError(f"There is no turn {number}: the turns so far are {self._numbers()}.")
        return turn

    def _numbers(self) -> str:
        return ", ".join(map(str, sorted(self.turns))) or "none"

    def path(self, number: Optional[int] = None) -> list[int]:
        """Turn numbers from the root to `number` (the current turn by default)."""
        number = self.current if number is None else number
        out = []
        while number != ROOT:
            out.append(number)
            number = self.get(number).parent
        return out[::-1]

    def messages(self, number: Optional[int] = None) -> list[Message]:
        """The user and assistant messages along a path, as the template renders them."""
        out = []
        for n in self.path(number):
            turn = self.turns[n]
            out += [Message("user", turn.user), Message("assistant", turn.reply_text, turn.reply_ids, turn.thought)]
        return out

    def children(self, number: int) -> list[int]:
        return sorted(n for n, t in self.turns.items() if t.parent == number)

    def siblings(self, number: int) -> list[int]:
        """The turns that share this one's parent, itself included, oldest first."""
        return self.children(self.get(number).parent)

    def leaf(self, number: int) -> int:
        """The newest turn below `number` following the newest child each time (where ←/→ lands)."""
        while kids := self.children(number):
            number = kids[-1]
        return number

    # --- the four requests --------------------------------------------------

    def follow(self, user: str) -> TurnPlan:
        """A new message after the current turn."""
        return TurnPlan(self.current, user)

    def edit(self, after: int, user: str) -> TurnPlan:
        """A new user message branching after turn `after`'s reply (ROOT: from the system prompt)."""
        if after != ROOT:
            self.get(after)
        return TurnPlan(after, user)

    def regenerate(self, number: int) -> TurnPlan:
        """A new reply to turn `number`'s message."""
        turn = self.get(number)
        return TurnPlan(turn.parent, turn.user)

    def fork(self, number: int, at: int, token: int) -> TurnPlan:
        """Turn `number`'s reply cut before its token `at`, `token` forced there."""
        turn = self.get(number)
        if not 0 <= at <= len(turn.reply_ids):
            raise ModelError(
                f"Turn {number}'s reply has {len(turn.reply_ids)} tokens: fork at 0 to {len(turn.reply_ids)}."
            )
        return TurnPlan(turn.parent, turn.user, turn.reply_ids[:at] + (token,), at, token)
