"""`glasschat replay`'s file: a JSON array whose entries grow a conversation tree.

Each entry is one of:

- `"TEXT"`: a user message continuing the current path;
- `{"user": TEXT, "from": TURN}`: a user message branching after turn TURN's reply (0: the system prompt);
- `{"regenerate": TURN}`: a new reply to turn TURN's message;
- `{"fork": TURN, "at": INDEX, "token": ID}`: turn TURN's reply cut before its token INDEX, token ID
  forced there, generation continuing.

Turns are numbered from 1 in the order the entries run, so an entry may only
name an earlier one. Everything is checked before the model loads: a bad entry
gets one line naming it, and nothing runs.
"""

from dataclasses import dataclass
from typing import Optional

from model.errors import ModelError
from model.runtime.conversation import Conversation, TurnInProgress

SHAPES = '"TEXT", {"user": TEXT, "from": TURN}, {"regenerate": TURN} or {"fork": TURN, "at": INDEX, "token": ID}'


@dataclass(frozen=True)
class ReplayEntry:
    kind: str  # "follow", "edit", "regenerate" or "fork"
    user: Optional[str] = None  # the message, for follow and edit
    turn: Optional[int] = None  # the turn it branches from (edit) or redoes (regenerate, fork)
    at: Optional[int] = None  # fork: reply token index
    token: Optional[int] = None  # fork: the id forced there


def _short(value) -> str:
    """A value from the file as one short line: it may be a megabyte of nested lists."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:59] + "…"


def _int(value, name: str, where: str, low: int) -> int:
    # bool is an int in Python, and `true` is never a turn number.
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ModelError(f'{where}: "{name}" must be a whole number from {low}, not {_short(value)}.')
    return value


def parse_entry(raw, number: int, path: str) -> ReplayEntry:
    """One entry of the array; `number` is its turn number (from 1)."""
    where = f"'{path}', entry {number}"
    if isinstance(raw, str):
        return ReplayEntry("follow", user=raw)
    if not isinstance(raw, dict):
        raise ModelError(f"{where} must be one of {SHAPES}.")
    keys = set(raw)
    if keys == {"user", "from"}:
        if not isinstance(raw["user"], str):
            raise ModelError(f'{where}: "user" must be a string.')
        entry = ReplayEntry("edit", user=raw["user"], turn=_int(raw["from"], "from", where, 0))
    elif keys == {"regenerate"}:
        entry = ReplayEntry("regenerate", turn=_int(raw["regenerate"], "regenerate", where, 1))
    elif keys == {"fork", "at", "token"}:
        entry = ReplayEntry(
            "fork",
            turn=_int(raw["fork"], "fork", where, 1),
            at=_int(raw["at"], "at", where, 0),
            token=_int(raw["token"], "token", where, 0),
        )
    else:
        raise ModelError(f"{where} has keys {_short(sorted(keys))}: it must be one of {SHAPES}.")
    if entry.turn >= number:
        raise ModelError(f"{where} names turn {entry.turn}, which has not run yet: name an earlier entry.")
    return entry


def parse_entries(raw, path: str) -> list[ReplayEntry]:
    if not isinstance(raw, list):
        raise ModelError(f"'{path}' must hold a JSON array: each entry {SHAPES}.")
    return [parse_entry(item, n, path) for n, item in enumerate(raw, start=1)]


def plan(conversation: Conversation, entry: ReplayEntry, turn_id: int) -> TurnInProgress:
    """This entry as a turn of the conversation; `turn_id` is the conversation's id for the turn the entry names."""
    if entry.kind == "follow":
        return conversation.follow(entry.user)
    if entry.kind == "edit":
        return conversation.edit(turn_id, entry.user)
    if entry.kind == "regenerate":
        return conversation.regenerate(turn_id)
    return conversation.fork(turn_id, entry.at, entry.token)
