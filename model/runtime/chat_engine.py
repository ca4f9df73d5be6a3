"""What every engine offers its askers: the UI, the headless commands, the tests, and later a server.

`engine.Engine` (on its own thread), `engine_core.EngineCore` (the same calls run at
once, on the caller's thread) and `tests/fake_engine.FakeEngine` implement this, and a
test checks their signatures against it, so a fake cannot drift from the real thing.
Requests carry token ids (model.runtime.requests): the asker owns the conversation and
renders it. Results come back as events, through the `emit` function the engine was built with.
"""

from collections.abc import Callable
from typing import Optional, Protocol, runtime_checkable

from model.internals.needs import StepNeeds
from model.runtime.chat_text import ChatText
from model.runtime.events import Event
from model.runtime.requests import HoldRequest, ScoreRequest, TurnRequest
from model.runtime.settings import EngineOptions


@runtime_checkable
class ChatEngine(Protocol):
    def start(self) -> "ChatEngine":
        """Begin loading the model: OptionsAdopted and ModelReady, or ModelFailed."""

    def text(self) -> Optional[ChatText]:
        """The loaded model's tokenizer and template (no MLX: any thread may use them); None before it loads."""

    def generate(self, request: TurnRequest) -> None:
        """Make the cache hold the request's ids and decode a reply: TurnStarted, PrefillProgress, PrefillDone,
        TokenGenerated per token, then TurnEnded (or TurnFailed), each naming the request's turn_id."""

    def hold(self, request: HoldRequest) -> None:
        """Make the cache hold exactly these ids (a path shown, a saved chat reopened): CacheHeld."""

    def score(self, request: ScoreRequest) -> None:
        """A reply read again, each token's probability and top-k: ReplyScored (or TurnFailed)."""

    def reset(self) -> None:
        """Empty the cache for a new conversation, with a fresh random key: ConversationReset."""

    def cancel(self) -> None:
        """Stop the reply in progress at the next token (the partial reply is kept), or a download."""

    def set_needs(self, needs: StepNeeds) -> None:
        """What the open views need from each decode step; read once per step, from the next one."""

    def update(self, options: EngineOptions) -> None:
        """Take these options: OptionsAdopted (a new cache setting empties the cache), or OptionsRefused."""

    def switch_model(self, model: Optional[str]) -> None:
        """Load another model (a file, folder or Hub id; None: the default) with an empty cache: OptionsAdopted and
        ModelReady, or SwitchFailed with the old model kept; `cancel` stops its download."""

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop, waiting up to `timeout` seconds for the engine to let go of the model."""


# How the UI and the headless commands get an engine (tests pass the fake's class).
EngineFactory = Callable[[EngineOptions, Callable[[Event], None]], ChatEngine]
