"""Any path of the conversation's tree drawn again, with what only the transcript saw of each reply.

The conversation owns the tree (model.runtime.conversation); the transcript keeps, per
turn, the reply's sampled steps (its top-k, for the confidence view and the fork picker)
and how long a thinking reply thought. ←/→, a regenerate, an edit or a fork then redraw a
path without asking the engine for its text, and a forked reply starts with the steps
before its cut.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional

from textual.widget import Widget

from model.runtime.branches import TurnTree
from model.runtime.conversation import TurnInProgress

from .confidence import SampledStep
from .reply_message import AssistantMessage, show_twin
from .thinking_fold import ThinkingFold
from .user_message import UserMessage


@dataclass
class ReplySteps:
    """What the transcript saw of each reply, by turn id."""

    steps: dict[int, list[SampledStep]] = field(default_factory=dict)  # none for a saved chat's replies
    thoughts: dict[int, tuple[str, int]] = field(default_factory=dict)  # a thinking reply's thinking and token count

    def fork_start(self, turn: TurnInProgress, prefix_text: str) -> list[SampledStep]:
        """A fork's reply starts with the forked reply's steps before the cut, then the forced token's."""
        if turn.forked_at is None:
            return []
        steps = self.steps.get(turn.forked_from, [])
        if len(steps) <= turn.forked_at:
            return []
        at = steps[turn.forked_at]
        forced = next((t for t in at.top_k if t.id == turn.token_forced), None)
        kept = "".join(s.text for s in steps[: turn.forked_at])
        text = forced.text if forced is not None else prefix_text[len(kept) :]
        prob = forced.prob if forced is not None else 0.0
        return steps[: turn.forked_at] + [SampledStep(turn.token_forced, text, prob, at.top_k)]


def mark_branches(tree: TurnTree, messages: Iterable[UserMessage]) -> None:
    """`‹ k/n ›` on every message whose turn has siblings."""
    for message in messages:
        if message.turn_id in tree.turns:
            siblings = tree.siblings(message.turn_id)
            message.show_branch(siblings.index(message.turn_id) + 1, len(siblings))


async def draw_path(into: Widget, tree: TurnTree, turn_id: int, seen: ReplySteps, view: Optional[type]) -> None:
    """The path from the root to `turn_id`, in place of what `into` showed (notices go; the tree keeps every turn)."""
    await into.remove_children()
    for n in tree.path(turn_id):
        t = tree.turns[n]
        await into.mount(UserMessage(t.user, turn_id=n))
        # Folded, as it was once the answer began; a saved reply's, as the conversation split it from its ids.
        saved = (t.thought.text, len(t.thought.ids) + 2) if t.thought is not None and t.thought.text else None
        thought = seen.thoughts.get(n, saved)  # (its text, its tokens with the two markers)
        if thought is not None:
            fold = ThinkingFold()
            await into.mount(fold)
            fold.add(thought[0])
            fold.fold(thought[1])
        reply = AssistantMessage(t.reply_text, t.reply_ids, turn_id=n)
        reply.steps = seen.steps.get(n, [])
        await into.mount(reply)
        if t.cancelled:
            reply.add_class("cancelled")
        if view is not None:
            await show_twin(reply, view)
    mark_branches(tree, into.query(UserMessage))
