"""Where the chat screen is: one value with explicit transitions, instead of flags spread over classes.

    LOADING ──ModelReady──▶ READY ◀──────────────── idle ─────────────┐
       │                    │  │ └─ reply ─▶ REPLYING (a turn runs) ──┤
       └─ModelFailed─▶ NO_MODEL │ └─ move ──▶ MOVING (the cache follows ┘
                            │     another path, a reopened chat, a new one)
                  switch ───┴──▶ SWITCHING ──ModelReady──▶ READY
                                    └──SwitchFailed──▶ READY (or NO_MODEL)

A request the user makes while the engine is busy either waits in the prompt queue (a
message) or is kept as `deferred` (a new or reopened conversation) and runs once idle.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Optional


class Phase(Enum):
    LOADING = "loading"  # the model named at start loads, perhaps downloads
    NO_MODEL = "no model"  # the first load failed: Ctrl+L picks another
    READY = "ready"
    REPLYING = "replying"  # a turn runs (Esc stops it)
    MOVING = "moving"  # the cache is brought to another path, a reopened chat, or emptied
    SWITCHING = "switching"  # another model loads; the one in use stays until it is ready


@dataclass(frozen=True)
class Move:
    """What a MOVING phase is for: the turn whose path will show (ROOT: none), and why."""

    reason: str  # "branch", "reopen" or "new"
    showing: int = 0


class ChatState:
    def __init__(self) -> None:
        self.phase = Phase.LOADING
        self.has_model = False  # some model is loaded (the first may have failed)
        self.editing: Optional[int] = None  # the turn whose message the prompt box holds to edit (`e`)
        self.move_for: Optional[Move] = None  # while MOVING
        self.switching_to: Optional[str] = None  # while SWITCHING: the model asked for
        self.deferred: Optional[Callable[[], None]] = None  # asked while busy; runs once idle

    @property
    def ready(self) -> bool:
        """The engine will take a request now."""
        return self.phase is Phase.READY

    @property
    def busy(self) -> bool:
        """A reply or a cache move is under way."""
        return self.phase in (Phase.REPLYING, Phase.MOVING)

    @property
    def loading(self) -> bool:
        """A model is loading (the first, or another): Esc cancels its download."""
        return self.phase in (Phase.LOADING, Phase.SWITCHING)

    # --- transitions -------------------------------------------------------------

    def _go(self, to: Phase, *allowed: Phase) -> bool:
        if self.phase not in allowed:
            return False
        self.phase = to
        return True

    def model_ready(self) -> bool:
        """A model is loaded; True if it was another one asked for (a switch), False for the first."""
        was_switch = self.phase is Phase.SWITCHING
        self.phase, self.has_model, self.switching_to = Phase.READY, True, None
        return was_switch

    def model_failed(self) -> None:
        self.phase, self.has_model, self.switching_to = Phase.NO_MODEL, False, None

    def switch(self, source: Optional[str]) -> None:
        """Another model asked for (a reply under way is stopped first, and kept)."""
        self.phase, self.switching_to = Phase.SWITCHING, source

    def switch_failed(self) -> None:
        self._go(Phase.READY if self.has_model else Phase.NO_MODEL, Phase.SWITCHING)
        self.switching_to = None

    def reply(self) -> bool:
        return self._go(Phase.REPLYING, Phase.READY)

    def move(self, move: Move) -> bool:
        if self._go(Phase.MOVING, Phase.READY):
            self.move_for = move
            return True
        return False

    def idle(self) -> Optional[Move]:
        """A reply or a move ended (a model switch under way stays under way); the move it was, if one."""
        move, self.move_for = self.move_for, None
        self._go(Phase.READY, Phase.REPLYING, Phase.MOVING)
        return move

    def edit(self, turn_id: int) -> None:
        """`e` on a message: the prompt box holds it until it is sent (a new branch) or dropped."""
        self.editing = turn_id

    def stop_editing(self) -> None:
        self.editing = None

    def take_deferred(self) -> Optional[Callable[[], None]]:
        """The request kept while busy, once ready (and only once)."""
        if not self.ready:
            return None
        action, self.deferred = self.deferred, None
        return action
