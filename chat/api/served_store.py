"""Served requests saved in the conversation store like chats, marked as served (`--no-save` turns it off).

A conversation's title starts with "served" (and the client's `user` name, if it gave
one), and its settings say `"served": {"client": ...}`, so `glasschat history` and the
app's history show which chats came through the API. A request that extends one saved
earlier (its messages start with that request's messages and reply, as sent) goes into
the same conversation, under that reply; one that diverges branches where it diverges,
as an edited message does in the app. What the server remembers of that is lost when
it stops: a later request starts a new conversation.
"""

import sys
from typing import Optional

from ..store import Store, StoreError
from .backend import ApiMessage
from .line import Outcome

TITLE_CHARS = 60

Path_ = tuple[tuple[str, str], ...]  # the (role, content) of each message from the start


class ServedStore:
    def __init__(self, store: Store, model: str, settings: dict):
        self.store = store
        self.model = model
        self.settings = settings
        self.saved: dict[Path_, tuple[int, int]] = {}  # a path saved -> (conversation id, its last message's id)
        self.failed = False

    def save(self, outcome: Outcome) -> None:
        """Save one answered request; a store that fails is reported once, and the server goes on."""
        try:
            self._save(outcome)
        except StoreError as exc:
            if not self.failed:
                print(f"glasschat serve: requests are no longer saved: {exc}", file=sys.stderr, flush=True)
            self.failed = True

    def _save(self, outcome: Outcome) -> None:
        request, finished = outcome.request, outcome.finished
        path = tuple((m.role, m.content) for m in request.messages)
        known = next((n for n in range(len(path), 0, -1) if path[:n] in self.saved), 0)
        if known:
            conversation, parent = self.saved[path[:known]]
        else:
            conversation, parent = self._new(request.messages, request.user), None
            known = _system_count(request.messages)  # the system prompt is the conversation's, not a message
        for n in range(known, len(path)):
            role, content = path[n]
            role = "system" if role == "developer" else role
            parent = self.store.add_message(conversation, role, content, parent=parent)
            self.saved[path[: n + 1]] = (conversation, parent)
        text = "".join(step.text for step in outcome.steps)
        end = finished.end
        stopped = end.finish_reason == "cancelled" and not finished.stopped_by_string  # its client went away
        # A reply cut at a stop string is saved as sent: its ids would say more than its text.
        ids = None if finished.stopped_by_string else list(end.reply_ids)
        stats = end.stats or _stats_of(outcome)
        reply = self.store.add_reply(
            conversation, text, ids, "cancelled" if stopped else "complete", stats, end.cache, parent=parent
        )
        self.saved[(*path, ("assistant", text))] = (conversation, reply)

    def _new(self, messages: tuple[ApiMessage, ...], client: Optional[str]) -> int:
        lead = _system_count(messages)
        system = "\n\n".join(m.content for m in messages[:lead]) or None
        first = next((m.content for m in messages if m.role == "user"), "")
        line = " ".join(first.split())
        title = (
            f"served{f' to {client}' if client else ''}: "
            + line[:TITLE_CHARS]
            + ("…" if len(line) > TITLE_CHARS else "")
        )
        settings = {**self.settings, "served": {"client": client}}
        return self.store.new_conversation(self.model, system, settings, title=title)


def _system_count(messages: tuple[ApiMessage, ...]) -> int:
    n = 0
    while n < len(messages) and messages[n].role in ("system", "developer"):
        n += 1
    return n


def _stats_of(outcome: Outcome) -> dict:
    """The numbers a backend that keeps none still has: the usage."""
    prompt, end = outcome.prompt, outcome.finished.end
    return {
        "prompt_tokens": prompt.prompt_tokens - prompt.cached_tokens if prompt else 0,
        "reused_tokens": prompt.cached_tokens if prompt else 0,
        "generated_tokens": end.completion_tokens,
        "stop_reason": end.finish_reason,
    }
