"""Keeps the open conversation saved: the app tells it what happened, it writes the store."""

from typing import Optional

from model.runtime.events import BranchSwitched, HistoryRestored, TurnEnded, TurnStarted

from .saved_chat import SavedChat, saved_chat
from .store import Store


class ConversationRecorder:
    def __init__(self, store: Store, model: str, settings: dict):
        self.store = store
        self.model = model
        self.settings = settings
        self.system: Optional[str] = None
        self.conversation_id: Optional[int] = None
        self.reply_of: dict[int, int] = {}  # the engine's turn number -> its reply's message id
        self.started: dict[int, tuple[int, TurnStarted]] = {}  # turns under way: user message id, start event
        self.opened: dict[int, int] = {}  # an opened chat's saved turns -> their last message, until restored

    def new(self, system: Optional[str]) -> None:
        """A new conversation starts; it is created in the store with its first message."""
        self.system = system
        self.conversation_id = None
        self.reply_of, self.started = {}, {}

    def _ensure_conversation(self) -> int:
        if self.conversation_id is None:
            self.conversation_id = self.store.new_conversation(self.model, self.system, self.settings)
        return self.conversation_id

    def turn_started(self, event: TurnStarted) -> None:
        """A turn anywhere on the tree (a message, an edit, a regenerate, a fork): its user message is saved
        now, after the reply of the turn it follows, so a reply that never ends loses nothing before it."""
        conversation = self._ensure_conversation()
        if event.parent and event.parent not in self.reply_of:
            # A turn restored from the store (or from before saving failed): go on from the path shown.
            message_id = self.store.add_message(conversation, "user", event.user)
        else:
            parent = self.reply_of[event.parent] if event.parent else None
            message_id = self.store.add_message(conversation, "user", event.user, parent=parent)
        self.started[event.turn] = (message_id, event)

    def turn_ended(self, event: TurnEnded) -> None:
        """The reply of a turn reported by `turn_started`."""
        if event.turn not in self.started:
            return
        user_id, started = self.started.pop(event.turn)
        status = "cancelled" if event.stats.stop_reason == "cancelled" else "complete"
        self.reply_of[event.turn] = self.store.add_reply(
            self.conversation_id,
            event.text,
            list(event.reply_ids),
            status,
            event.stats.as_dict(),
            event.cache.as_dict(),
            parent=user_id,
            fork=(started.forked_at, started.token_forced),
        )

    def branch_switched(self, event: BranchSwitched) -> None:
        """The path shown changed: the store remembers its last message, so opening the chat shows it again."""
        if self.conversation_id is not None and event.turn in self.reply_of:
            self.store.show(self.conversation_id, self.reply_of[event.turn])

    def older_messages(self) -> list[str]:
        """The user's messages in other conversations, newest first."""
        return self.store.user_messages(exclude_conversation=self.conversation_id)

    def open(self, conversation_id: int) -> SavedChat:
        """A saved conversation, its whole tree; new turns are saved into it from now on."""
        info = self.store.conversation(conversation_id)
        messages, shown = self.store.messages(conversation_id), self.store.current_message(conversation_id)
        saved = saved_chat(info["system_prompt"], messages, shown)
        self.conversation_id, self.system = conversation_id, info["system_prompt"]
        self.reply_of, self.started, self.opened = {}, {}, saved.ends
        return saved

    def restored(self, event: HistoryRestored) -> None:
        """The engine has numbered the opened chat's turns: a branch from any of them is saved under it."""
        self.reply_of.update({n + event.turn_offset: message for n, message in self.opened.items()})
        self.opened = {}
