"""Branches from the chat screen: regenerate, edit a message, fork at a token, switch with the arrows.

The engine keeps the conversation's tree and the transcript shows one path of it
(`widgets/branch_paths.py`); this is the screen's side. Each request waits for the
reply under way (Esc stops it). An edit holds the message in the prompt box until it
is sent (a new branch after the turn the message followed) or Esc drops it. A reply
shown without its steps (a saved chat's) is read again while a reply view is open,
so the confidence view can draw it and fork it.
"""

from collections.abc import Iterable
from typing import Optional

from textual.app import SystemCommand

from model.runtime.events import BranchSwitched, ConversationReset, Event, HistoryRestored, ModelReady

from ..engine_view import handles
from ..messages import BranchPicked, EditPicked, ForkPicked
from ..widgets.prompt_input import PromptInput
from ..widgets.user_message import UserMessage


class Branching:
    """Mixed into the chat screen, which has `transcript`, `busy`, `ready` and the app's bridge."""

    editing: Optional[int] = None  # the turn whose message the prompt box holds to edit (`e`)
    scored: frozenset[int] = frozenset()  # saved replies asked to be read again (score_saved_replies)

    def branch_commands(self) -> Iterable[SystemCommand]:
        """The palette's entries for branches."""
        yield SystemCommand(
            "Regenerate",
            "Ctrl+R: a new reply to the focused reply's message (the last one by default), with the sampling now set",
            self.action_regenerate,
        )
        yield SystemCommand(
            "Edit message",
            "E on a message: edit it in the box; sending makes a new branch from there (the last message by default)",
            self.action_edit_message,
        )

    def _branch_ready(self) -> bool:
        """Branching waits for the reply under way (Esc stops it) and for the model."""
        if self.busy or not self.ready:
            self.notify("Wait for the reply to finish (Esc stops it), then branch.", severity="warning")
            return False
        return True

    def action_regenerate(self) -> None:
        """A new reply to the focused reply's message, or to the last message shown."""
        # A reply, its tinted twin and a user message all know their turn.
        turn = getattr(self.focused, "turn", None)
        turn = turn if turn is not None else self.transcript.paths.tree.current
        if not turn:
            self.notify("Nothing to regenerate yet: send a message first.")
            return
        if self._branch_ready():
            self.busy = True
            self.app.bridge.regenerate(turn)

    def action_edit_message(self) -> None:
        """Edit the focused message, or the last one shown."""
        focused = self.focused if isinstance(self.focused, UserMessage) else None
        shown = [m for m in self.transcript.query(UserMessage) if m.turn is not None]
        target = focused or (shown[-1] if shown else None)
        if target is None:
            self.notify("Nothing to edit yet: send a message first.")
            return
        self.on_edit_picked(EditPicked(target))

    def on_edit_picked(self, message: EditPicked) -> None:
        """The message's text in the prompt box; sending it makes a new branch from the turn before it."""
        target = message.message
        if target.turn not in self.transcript.paths.tree.turns:
            self.notify("This message has not reached the model yet: it cannot be edited.", severity="warning")
            return
        number = list(self.transcript.query(UserMessage)).index(target) + 1
        self.editing = target.turn
        self.query_one(PromptInput).start_editing(target.text, f"editing message {number} · Esc cancels")

    def stop_editing(self, clear: bool = False) -> None:
        if self.editing is None:
            return
        self.editing = None
        prompt = self.query_one(PromptInput)
        prompt.stop_editing()
        if clear:
            prompt.clear()

    def _send_edit(self, text: str) -> None:
        """The edited message, as a new branch after the turn the original followed (the old one stays)."""
        tree = self.transcript.paths.tree
        if self.editing not in tree.turns:  # the conversation changed under the edit
            self.stop_editing()
            self.notify("That message is no longer in this conversation.", severity="warning")
            return
        if not self._branch_ready():  # the text stays in the box, still an edit
            return
        after = tree.get(self.editing).parent
        self.stop_editing(clear=True)
        self.busy = True
        self.app.bridge.edit(after, text)

    def on_fork_picked(self, message: ForkPicked) -> None:
        if self._branch_ready():
            self.busy = True
            self.app.bridge.fork(message.turn, message.at, message.token)

    def on_branch_picked(self, message: BranchPicked) -> None:
        target = self.transcript.paths.sibling(message.turn, message.delta)
        if target is not None and self._branch_ready():
            self.busy = True
            self.app.bridge.switch_branch(target)

    @handles(BranchSwitched, HistoryRestored)
    def score_saved_replies(self, _event: Optional[Event] = None) -> None:
        """While a reply view is open, replies shown without their steps (a saved chat's) are read again, so
        they can be drawn and forked like new ones (model.runtime.rescore); each is asked for once."""
        if self.transcript.reply_view is None:
            return
        for turn in self.transcript.unscored():
            if turn not in self.scored:
                self.scored = self.scored | {turn}
                self.app.bridge.score(turn)

    @handles(ConversationReset, ModelReady, HistoryRestored)
    def drop_edit(self, _event: Event) -> None:
        """A new conversation has no message to edit; the text stays in the box."""
        self.stop_editing()
