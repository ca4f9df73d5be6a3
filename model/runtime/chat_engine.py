"""What every engine offers its users: the UI bridge, the headless commands, the fake and the test harness.

`engine.Engine` (the real one, on its own thread), `tests/fake_engine.FakeEngine`
and `tests/engine_harness.SyncEngine` all implement this, and a test checks their
signatures against it, so a fake cannot drift from the real thing. Results come
back as events, through the `emit` function the engine was built with.
"""

from collections.abc import Callable, Sequence
from typing import Any, Optional, Protocol, runtime_checkable

from model.internals.needs import StepNeeds
from model.loading.chat_template import Message
from model.loading.tokenizer import TextTokenizer
from model.runtime.branches import Turn
from model.runtime.session import Emit, EngineOptions
from model.runtime.settings import SamplingSettings


@runtime_checkable
class ChatEngine(Protocol):
    def start(self) -> "ChatEngine":
        """Begin loading the model; ModelReady (or ModelFailed) follows."""

    def send(self, text: str) -> None:
        """Answer a user message: TurnStarted, tokens, then TurnEnded (or TurnFailed)."""

    def cancel(self) -> None:
        """Stop the reply in progress at the next token; the partial reply is kept."""

    def reset(self, system: Optional[str] = None) -> None:
        """A new conversation with this system prompt: ConversationReset."""

    def restore(self, system: Optional[str], messages: Sequence[Message]) -> None:
        """Start over on a saved conversation, its history prefilled: HistoryRestored."""

    def restore_tree(self, system: Optional[str], turns: Sequence[Turn], current: int) -> None:
        """Start over on a saved tree of turns (numbered from 1, each after its parent), the path ending at
        `current` prefilled: HistoryRestored, whose `turn_offset` says what the saved turns are numbered now."""

    def edit(self, after: int, text: str) -> None:
        """A new user message branching after turn `after` (0: from the system prompt)."""

    def regenerate(self, turn: int) -> None:
        """A new reply to turn `turn`'s message, with the sampling settings now in force."""

    def fork(self, turn: int, at: int, token: int) -> None:
        """Turn `turn`'s reply cut before its token `at`, `token` forced there, generation continuing."""

    def switch_branch(self, turn: int) -> None:
        """Show the path ending at `turn`; the cache follows it: BranchSwitched."""

    def score(self, turn: int) -> None:
        """Turn `turn`'s reply read again, each token's probability and top-k: ReplyScored (for a saved reply)."""

    def switch_model(self, model: Optional[str]) -> None:
        """Load another model (a file, folder or Hub id; None: the default) in a new conversation: ModelReady,
        or SwitchFailed with the old model kept; `cancel` stops its download."""

    def set_needs(self, needs: StepNeeds) -> None:
        """What the open views need from each decode step; takes effect at the next step."""

    def set_sampling(self, settings: SamplingSettings) -> None:
        """Sampling for the next reply on."""

    def update(self, **changes: Any) -> None:
        """Change EngineOptions fields between turns; a new cache setting starts a new conversation."""

    def tokenizer(self) -> Optional[TextTokenizer]:
        """The model's tokenizer once loaded (Rust, not MLX: any thread may use it), else None."""

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop, waiting up to `timeout` seconds for the engine to let go of the model."""


# How the UI and the headless commands get an engine (tests pass the fake's class).
EngineFactory = Callable[[EngineOptions, Emit], ChatEngine]
