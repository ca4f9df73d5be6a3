"""The engine: a chat session run on one long-lived thread, the one that owns MLX.

MLX streams belong to the thread that made them, so every load, prefill and
decode happens on this thread. The methods below may be called from any
thread: they queue a call to the session (see `session.ChatSession`, where
the logic lives) or set a flag it reads. Events come back through `emit`,
which runs on the engine thread: the UI wraps each in a Textual message, the
CLI puts it on a queue.
"""

import gc
import queue
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Optional

import mlx.core as mx

from model.internals.needs import StepNeeds
from model.loading.chat_template import Message
from model.loading.tokenizer import TextTokenizer
from model.runtime.branches import Turn
from model.runtime.session import ChatSession, Emit, EngineOptions
from model.runtime.settings import SamplingSettings

__all__ = ["Engine", "EngineOptions"]

_SHUTDOWN = object()


class Engine:
    """A ChatSession on its own thread; implements `chat_engine.ChatEngine`."""

    def __init__(self, options: EngineOptions, emit: Emit, clock: Callable[[], float] = time.perf_counter):
        self.session = ChatSession(options, emit, clock)
        self._requests: queue.Queue = queue.Queue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="glasschat-engine", daemon=True)

    def start(self) -> "Engine":
        self._thread.start()
        return self

    def send(self, text: str) -> None:
        self._put(self.session.answer, text)

    def cancel(self) -> None:
        self.session.cancel()

    def reset(self, system: Optional[str] = None) -> None:
        self._put(self.session.reset, system)

    def restore(self, system: Optional[str], messages: Sequence[Message]) -> None:
        self._put(self.session.restore, system, tuple(messages))

    def restore_tree(self, system: Optional[str], turns: Sequence[Turn], current: int) -> None:
        self._put(self.session.restore_tree, system, tuple(turns), current)

    def edit(self, after: int, text: str) -> None:
        self._put(self.session.edit, after, text)

    def regenerate(self, turn: int) -> None:
        self._put(self.session.regenerate, turn)

    def fork(self, turn: int, at: int, token: int) -> None:
        self._put(self.session.fork, turn, at, token)

    def switch_branch(self, turn: int) -> None:
        self._put(self.session.switch_branch, turn)

    def score(self, turn: int) -> None:
        self._put(self.session.score, turn)

    def switch_model(self, model: Optional[str]) -> None:
        # The only request served while no model is loaded: another model is what can help.
        self._requests.put((partial(self.session.switch_model, model), False))

    def set_needs(self, needs: StepNeeds) -> None:
        self.session.needs = needs  # one reference swap: the engine thread reads it whole, once per step

    def set_sampling(self, settings: SamplingSettings) -> None:
        self.update(sampling=settings)

    def update(self, **changes: Any) -> None:
        self._put(self.session.update, **changes)

    def tokenizer(self) -> Optional[TextTokenizer]:
        loaded = self.session.loaded
        return loaded.tokenizer if loaded is not None else None

    def shutdown(self, timeout: float = 10.0) -> None:
        self.session.cancel()
        self._requests.put(_SHUTDOWN)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._stopped.wait(timeout)

    def _put(self, method: Callable, *args: Any, **kwargs: Any) -> None:
        """Queue a call to the session that needs a model loaded."""
        self._requests.put((partial(method, *args, **kwargs), True))

    # --- the engine thread -------------------------------------------------

    def _run(self) -> None:
        try:
            self.session.open()  # a failure is reported; the thread stays to serve switch_model
            self._serve()
        finally:
            # Free the model and cache here, on the thread that made them, so a
            # closed engine holds no memory while its thread is parked.
            self.session.unload()
            gc.collect()
            mx.synchronize()
            self._stopped.set()
            # Park instead of returning. When a thread that ran MLX work
            # exits, its thread-local stream is torn down, and with OpenBLAS
            # loaded that intermittently aborts the process ("terminate called
            # without an active exception"). A parked daemon thread never exits.
            threading.Event().wait()

    def _serve(self) -> None:
        while (request := self._requests.get()) is not _SHUTDOWN:
            call, needs_model = request
            if needs_model and self.session.loaded is None:
                self.session.refuse_without_model()
                continue
            try:
                call()
            except Exception as exc:
                self.session.recover(exc)
