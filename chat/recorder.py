"""Keeps the open conversation saved: the app tells it what happened, it writes the store."""

from typing import Optional

from model.loading.chat_template import Message
from model.runtime.events import BranchSwitched, TurnEnded, TurnStarted

from .store import Store, StoredMessage


class ConversationRecorder:
    def __init__(self, store: Store, model: str, settings: dict):
        self.store = store
        self.model = model
        self.settings = settings
        self.system: Optional[str] = None
        self.conversation_id: Optional[int] = None
        self.reply_of: dict[int, int] = {}  # the engine's turn number -> its reply's message id
        self.started: dict[int, tuple[int, TurnStarted]] = {}  # turns under way: user message id, start event

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

    def open(self, conversation_id: int) -> tuple[Optional[str], list[StoredMessage], list[Message]]:
        """A saved conversation: its system prompt, its stored messages, and the engine's view of them."""
        info = self.store.conversation(conversation_id)
        stored = self.store.path_to(conversation_id)  # the path shown; the engine goes on from its end
        self.conversation_id, self.system = conversation_id, info["system_prompt"]
        engine_messages = []
        for m in stored:
            ids = tuple(m.token_ids) if m.role == "assistant" and m.token_ids is not None else None
            engine_messages.append(Message(m.role, m.content, ids))
        # A user message whose reply never came (the app was killed) has no
        # place in the template's history: the next message follows it.
        if engine_messages and engine_messages[-1].role == "user":
            engine_messages.append(Message("assistant", "", ()))
        return info["system_prompt"], stored, engine_messages
