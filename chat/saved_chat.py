"""A saved conversation as the conversation takes it back: a tree of turns with their ids, and the path shown.

The store keeps messages, each under its parent (`chat/store.py`); a conversation
thinks in turns, a user message and its reply. Turn ids are given in the order the
messages were written, so each comes after its parent. A reply that never came (the
app was killed) leaves its turn with an empty reply, so a message sent after it still
has a turn to follow.
"""

from dataclasses import dataclass, replace
from typing import Optional

from model.runtime.branches import ROOT, Turn

from .store import StoredMessage


@dataclass(frozen=True)
class SavedChat:
    system: Optional[str]
    turns: list[Turn]  # each after its parent; a stopped reply's turn is `cancelled`
    current: int  # the last turn of the path shown (ROOT: none)
    ends: dict[int, int]  # turn -> the message a turn after it follows: its reply, or its message if none came


def saved_chat(system: Optional[str], messages: list[StoredMessage], shown: Optional[int]) -> SavedChat:
    """The tree of turns in `messages` (in the order written), the path shown ending at message `shown`."""
    turns: dict[int, Turn] = {}
    turn_of: dict[int, int] = {}  # message id -> its turn
    ends: dict[int, int] = {}
    for m in messages:
        if m.role == "user":
            turn_id = len(turns) + 1
            parent = turn_of.get(m.parent_id, ROOT)
            turns[turn_id] = Turn(turn_id=turn_id, parent=parent, user=m.content, reply_ids=(), reply_text="")
        elif m.role == "assistant" and m.parent_id in turn_of:
            turn_id = turn_of[m.parent_id]
            turns[turn_id] = replace(
                turns[turn_id],
                reply_ids=tuple(m.token_ids or ()),
                reply_text=m.content,
                forked_at=m.forked_at,
                token_forced=m.token_forced,
                cancelled=m.status == "cancelled",
            )
        else:
            continue  # a reply with no message before it: nothing to attach it to
        turn_of[m.id], ends[turn_id] = turn_id, m.id
    current = turn_of.get(shown, len(turns)) if shown is not None else len(turns)
    return SavedChat(system, list(turns.values()), current, ends)
