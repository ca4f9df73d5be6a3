"""The engine: its work (`engine_core.EngineCore`) run on one long-lived thread, the one that owns MLX.

MLX streams belong to the thread that made them, so every load, prefill and
decode happens on this thread. The methods below may be called from any
thread: they queue the call (requests are served in order) or, for `cancel`
and `set_needs`, set what the running request reads. Events come back through
`emit`, which runs on the engine thread: the UI wraps each in a Textual message,
a headless caller puts it on a queue.
"""

import gc
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Optional

import mlx.core as mx

from model.internals.needs import StepNeeds
from model.runtime.chat_text import ChatText
from model.runtime.engine_core import Emit, EngineCore
from model.runtime.requests import HoldRequest, ScoreRequest, TurnRequest
from model.runtime.settings import EngineOptions

_SHUTDOWN = object()


class Engine:
    """An EngineCore on its own thread; implements `chat_engine.ChatEngine`."""

    def __init__(self, options: EngineOptions, emit: Emit, clock: Callable[[], float] = time.perf_counter):
        self.core = EngineCore(options, emit, clock)
        self._requests: queue.Queue = queue.Queue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="glasschat-engine", daemon=True)

    def start(self) -> "Engine":
        self._thread.start()
        return self

    def text(self) -> Optional[ChatText]:
        return self.core.text()

    def generate(self, request: TurnRequest) -> None:
        self._put(self.core.generate, request)

    def hold(self, request: HoldRequest) -> None:
        self._put(self.core.hold, request)

    def score(self, request: ScoreRequest) -> None:
        self._put(self.core.score, request)

    def reset(self) -> None:
        self._put(self.core.reset)

    def cancel(self) -> None:
        self.core.cancel()

    def set_needs(self, needs: StepNeeds) -> None:
        self.core.set_needs(needs)

    def update(self, options: EngineOptions) -> None:
        self._put(self.core.update, options)

    def switch_model(self, model: Optional[str]) -> None:
        self._put(self.core.switch_model, model)

    def shutdown(self, timeout: float = 10.0) -> None:
        self.core.cancel()
        self._requests.put(_SHUTDOWN)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._stopped.wait(timeout)

    def _put(self, method: Callable, *args) -> None:
        self._requests.put(partial(method, *args))

    # --- the engine thread -------------------------------------------------

    def _run(self) -> None:
        try:
            self.core.open()  # a failure is reported; the thread stays to serve switch_model
            while (call := self._requests.get()) is not _SHUTDOWN:
                try:
                    call()
                except Exception as exc:
                    self.core.recover(exc)
        finally:
            # Free the model and cache here, on the thread that made them, so a
            # closed engine holds no memory while its thread is parked.
            self.core.unload()
            gc.collect()
            mx.synchronize()
            self._stopped.set()
            # Park instead of returning. When a thread that ran MLX work
            # exits, its thread-local stream is torn down, and with OpenBLAS
            # loaded that intermittently aborts the process ("terminate called
            # without an active exception"). A parked daemon thread never exits.
            threading.Event().wait()
