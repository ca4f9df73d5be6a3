"""A saved conversation as the engine and the transcript take it back: a tree of turns and the path shown.

The store keeps messages, each under its parent (`chat/store.py`); the engine
and the transcript think in turns, a user message and its reply. A reply that
never came (the app was killed) leaves its turn with an empty reply, so a
message sent after it still has a turn to follow.
"""

from dataclasses import dataclass, replace
from typing import Optional

from model.runtime.branches import ROOT, Turn

from .store import StoredMessage


@dataclass(frozen=True)
class SavedChat:
    system: Optional[str]
    turns: list[Turn]  # numbered from 1 in the order they were written, so each comes after its parent
    current: int  # the last turn of the path shown (ROOT: none)
    cancelled: frozenset[int]  # turns whose reply was stopped
    ends: dict[int, int]  # turn -> the message a turn after it follows: its reply, or its message if none came


def saved_chat(system: Optional[str], messages: list[StoredMessage], shown: Optional[int]) -> SavedChat:
    """The tree of turns in `messages` (in the order written), the path shown ending at message `shown`."""
    turns: dict[int, Turn] = {}
    turn_of: dict[int, int] = {}  # message id -> its turn
    ends: dict[int, int] = {}
    cancelled = set()
    for m in messages:
        if m.role == "user":
            number = len(turns) + 1
            turns[number] = Turn(number, turn_of.get(m.parent_id, ROOT), m.content, (), "")
        elif m.role == "assistant" and m.parent_id in turn_of:
            number = turn_of[m.parent_id]
            ids = tuple(m.token_ids or ())
            turns[number] = replace(
                turns[number], reply_ids=ids, reply_text=m.content, forked_at=m.forked_at, token_forced=m.token_forced
            )
            if m.status == "cancelled":
                cancelled.add(number)
        else:
            continue  # a reply with no message before it: nothing to attach it to
        turn_of[m.id], ends[number] = number, m.id
    current = turn_of.get(shown, len(turns)) if shown is not None else len(turns)
    return SavedChat(system, list(turns.values()), current, frozenset(cancelled), ends)
