"""Keeps the open conversation saved: the conversation tells it what happened (it is its `Saver`), it writes the store.

A store that fails mid-chat (the disk is full, the file was removed) is reported once
through `on_problem` and saving stops; the chat goes on. Without `on_problem` the error
is raised, for the headless commands to print as their one line.
"""

from collections.abc import Callable
from typing import Optional

from model.runtime.branches import Turn
from model.runtime.conversation import TurnInProgress
from model.runtime.events import TurnEnded

from .saved_chat import SavedChat, saved_chat
from .store import Store, StoreError


class ConversationRecorder:
    def __init__(self, store: Store, model: str, settings: dict, on_problem: Optional[Callable[[str], None]] = None):
        self.store = store
        self.model = model
        self.settings = settings
        self.on_problem = on_problem
        self.broken = ""  # why saving stopped, once it has
        self.system: Optional[str] = None
        self.conversation_id: Optional[int] = None
        self.reply_of: dict[int, int] = {}  # turn id -> the message a turn after it follows: its reply, or its message
        self.message_of: dict[int, int] = {}  # turns under way -> their user message

    def _write(self, action: Callable[[], None]) -> None:
        if self.broken:
            return
        try:
            action()
        except StoreError as exc:
            if self.on_problem is None:
                raise
            self.broken = str(exc)
            self.on_problem(self.broken)

    def new(self, system: Optional[str]) -> None:
        """A new conversation starts; it is created in the store with its first message."""
        self.system = system
        self.conversation_id = None
        self.reply_of, self.message_of = {}, {}

    def _ensure_conversation(self) -> int:
        if self.conversation_id is None:
            self.conversation_id = self.store.new_conversation(self.model, self.system, self.settings)
        return self.conversation_id

    def turn_started(self, turn: TurnInProgress) -> None:
        """A turn anywhere on the tree (a message, an edit, a regenerate, a fork): its user message is saved
        now, after the message of the turn it follows, so a reply that never ends loses nothing before it."""

        def save() -> None:
            conversation = self._ensure_conversation()
            if turn.parent and turn.parent not in self.reply_of:
                # A turn whose reply was never saved (saving failed meanwhile): go on after the newest message.
                message_id = self.store.add_message(conversation, "user", turn.user)
            else:
                parent = self.reply_of[turn.parent] if turn.parent else None
                message_id = self.store.add_message(conversation, "user", turn.user, parent=parent)
            self.message_of[turn.turn_id] = message_id

        self._write(save)

    def turn_ended(self, turn: Turn, ended: TurnEnded) -> None:
        """The reply of a turn that `turn_started` saved."""
        user_id = self.message_of.pop(turn.turn_id, None)
        if user_id is None:
            return

        def save() -> None:
            self.reply_of[turn.turn_id] = self.store.add_reply(
                self.conversation_id,
                ended.text,
                list(ended.reply_ids),
                "cancelled" if turn.cancelled else "complete",
                ended.stats.as_dict(),
                ended.cache.as_dict(),
                parent=user_id,
                fork=(turn.forked_at, turn.token_forced),
            )

        self._write(save)

    def served(self, title: str, client: Optional[str], turns: list[Turn]) -> None:
        """A conversation that came whole (a request to the app's server): created marked as served, its earlier
        exchanges saved as they were sent (their replies without numbers: this app did not time them)."""

        def save() -> None:
            settings = {**self.settings, "served": {"client": client}}
            self.conversation_id = self.store.new_conversation(self.model, self.system, settings, title=title)
            parent = None
            for turn in turns:
                user_id = self.store.add_message(self.conversation_id, "user", turn.user, parent=parent)
                parent = self.store.add_message(
                    self.conversation_id, "assistant", turn.reply_text, list(turn.reply_ids), parent=user_id
                )
                self.reply_of[turn.turn_id] = parent

        self._write(save)

    def path_shown(self, turn_id: int) -> None:
        """The path shown changed: the store remembers its last message, so opening the chat shows it again."""
        if self.conversation_id is not None and turn_id in self.reply_of:
            self._write(lambda: self.store.show(self.conversation_id, self.reply_of[turn_id]))

    def older_messages(self) -> list[str]:
        """The user's messages in other conversations, newest first."""
        return self.store.user_messages(exclude_conversation=self.conversation_id)

    def open(self, conversation_id: int) -> SavedChat:
        """A saved conversation, its whole tree; new turns are saved into it from now on, each under its parent."""
        info = self.store.conversation(conversation_id)
        messages, shown = self.store.messages(conversation_id), self.store.current_message(conversation_id)
        saved = saved_chat(info["system_prompt"], messages, shown)
        self.conversation_id, self.system = conversation_id, info["system_prompt"]
        self.reply_of, self.message_of = dict(saved.ends), {}
        return saved
