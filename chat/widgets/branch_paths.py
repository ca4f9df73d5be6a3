"""The conversation's tree as the transcript keeps it, so any path of it can be drawn again.

The engine owns the tree (`model.runtime.branches`); the transcript keeps a copy
made from the engine's turn events, with each reply's sampled steps and how it
stopped. ←/→, a regenerate, an edit or a fork then redraw a path without asking
the engine for its text, and a forked reply starts with the steps before its cut,
so the confidence view can draw them.
"""

from collections.abc import Iterable
from typing import Optional

from textual.widget import Widget

from model.runtime.branches import ROOT, Turn, TurnTree
from model.runtime.events import TurnStarted

from ..saved_chat import SavedChat
from .confidence import SampledStep
from .reply_message import AssistantMessage, show_twin
from .thinking_fold import ThinkingFold
from .user_message import UserMessage


class BranchPaths:
    def __init__(self) -> None:
        self.tree = TurnTree()
        self.steps: dict[int, list[SampledStep]] = {}  # each turn's reply steps (none for a saved chat's turns)
        self.stop_reasons: dict[int, str] = {}
        self.thoughts: dict[int, tuple[str, int]] = {}  # a thinking reply's thinking and its token count

    @classmethod
    def of_saved(cls, saved: SavedChat, offset: int = 0) -> "BranchPaths":
        """A saved chat's tree, its turns numbered as the engine numbers them (`offset` after the saved numbers)."""
        paths = cls()
        paths.tree.graft(saved.turns, saved.current, offset)
        for n in saved.cancelled:
            paths.stop_reasons[n + offset] = "cancelled"
        return paths

    def knows(self, turn: Optional[int]) -> bool:
        """A turn a path can be drawn to (None: the current one)."""
        return turn is None or turn == ROOT or turn in self.tree.turns

    def record(
        self, turn: Turn, steps: list[SampledStep], stop_reason: str, thought: tuple[str, int] = ("", 0)
    ) -> None:
        self.tree.add(turn)
        self.steps[turn.number] = steps
        self.stop_reasons[turn.number] = stop_reason
        if thought[1]:
            self.thoughts[turn.number] = thought

    def sibling(self, turn: int, delta: int) -> Optional[int]:
        """Where ←/→ on turn `turn`'s message lands: the newest leaf below the sibling `delta` away."""
        if turn not in self.tree.turns:
            return None
        siblings = self.tree.siblings(turn)
        index = siblings.index(turn) + delta
        if not 0 <= index < len(siblings):
            return None
        return self.tree.leaf(siblings[index])

    def mark(self, messages: Iterable[UserMessage]) -> None:
        """`‹ k/n ›` on every message whose turn has siblings."""
        for message in messages:
            if message.turn in self.tree.turns:
                siblings = self.tree.siblings(message.turn)
                message.show_branch(siblings.index(message.turn) + 1, len(siblings))

    def fork_start(self, event: TurnStarted) -> list[SampledStep]:
        """A fork's reply starts with the forked reply's steps before the cut, then the forced token's."""
        if event.forked_at is None:
            return []
        forked = next(
            (n for n, t in self.tree.turns.items() if t.reply_ids[: event.forked_at] == event.reply_prefix[:-1]),
            None,
        )
        steps = self.steps.get(forked, [])
        if len(steps) <= event.forked_at:
            return []
        at = steps[event.forked_at]
        forced = next((t for t in at.top_k if t.id == event.token_forced), None)
        text = (
            forced.text
            if forced is not None
            else event.prefix_text[len("".join(s.text for s in steps[: event.forked_at])) :]
        )
        return steps[: event.forked_at] + [
            SampledStep(event.token_forced, text, forced.prob if forced else 0.0, at.top_k)
        ]

    async def draw(self, into: Widget, turn: int, reply_view: Optional[type]) -> None:
        """The path from the root to `turn`, in place of what `into` showed (notices go; the tree keeps every turn)."""
        self.tree.current = turn
        await into.remove_children()
        for n in self.tree.path(turn):
            t = self.tree.turns[n]
            await into.mount(UserMessage(t.user, turn=n))
            if n in self.thoughts:  # folded, as it was once the answer began
                text, tokens = self.thoughts[n]
                fold = ThinkingFold()
                await into.mount(fold)
                fold.add(text)
                fold.fold(tokens)
            reply = AssistantMessage(t.reply_text, t.reply_ids, turn=n)
            reply.steps = self.steps.get(n, [])
            await into.mount(reply)
            if self.stop_reasons.get(n) == "cancelled":
                reply.add_class("cancelled")
            if reply_view is not None:
                await show_twin(reply, reply_view)
        self.mark(into.query(UserMessage))
