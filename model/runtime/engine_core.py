"""The engine's work as plain synchronous calls: the model's lifecycle, and each request served by the cache service.

`engine.Engine` runs these calls on the one thread that owns MLX; a test (or any caller
that owns MLX on its own thread) may call them directly, since `EngineCore` is itself a
`ChatEngine` whose requests run at once. It keeps no conversation: requests bring token
ids (model.runtime.requests), and everything it did comes back as events through `emit`.
"""

import gc
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Optional

import mlx.core as mx

from model.errors import ModelError
from model.internals.needs import StepNeeds
from model.loading.loader import LoadedModel
from model.runtime.cache_service import CacheService
from model.runtime.chat_text import ChatText
from model.runtime.events import (
    CacheHeld,
    ConversationReset,
    Event,
    ModelFailed,
    ModelLoading,
    ModelReady,
    OptionsAdopted,
    OptionsRefused,
    PrefillProgress,
    ReplyScored,
    SwitchFailed,
    TurnFailed,
)
from model.runtime.generate import warm_up
from model.runtime.model_source import read_model
from model.runtime.requests import HoldRequest, ScoreRequest, TurnRequest
from model.runtime.settings import EngineOptions
from model.runtime.stats import TurnClock
from model.runtime.turn_report import TurnReport

Emit = Callable[[Event], None]
NO_MODEL = "No model is loaded: load another one first."


class EngineCore:
    """Implements `chat_engine.ChatEngine`, each request served before the call returns."""

    def __init__(self, options: EngineOptions, emit: Emit, clock: Callable[[], float] = time.perf_counter):
        self.options = options  # in force; reported whenever they change (OptionsAdopted)
        self.emit = emit
        self.clock = clock  # every time the panels show is read from this (tests pass a fake one)
        self.needs = StepNeeds(top_k=options.top_k_shown)  # read once per decode step; any thread may swap it
        self.cancelled = threading.Event()  # set from any thread; read once per token and prefill chunk
        self.loaded: Optional[LoadedModel] = None
        self.service: Optional[CacheService] = None
        self._text: Optional[ChatText] = None
        self._key: Optional[mx.array] = None
        self._serving = 0  # the turn id of the request being served (0: none, or not a turn)

    # --- the model ------------------------------------------------------------------

    def start(self) -> "EngineCore":
        self.open()
        return self

    def open(self) -> bool:
        """Load the model named in the options; a failure is one ModelFailed line. Whether it is ready."""
        try:
            self._install(self._read_model(self.options.model))
            return True
        except ModelError as exc:
            self.emit(ModelFailed(message=str(exc)))
        except Exception as exc:  # an unexpected loader bug still gets one line
            self.emit(ModelFailed(message=f"Could not load the model: {type(exc).__name__}: {exc}"))
        return False

    def switch_model(self, model: Optional[str]) -> None:
        """Replace the model; the old one is used until the new one has loaded, and kept if it cannot."""
        group = self.loaded.group if self.loaded is not None else None
        if group is not None:  # the followers hold their share of this model, loaded when they started
            how = f"--model {model} --ranks {group.size}" if model else f"--ranks {group.size}"
            line = f"Every rank loaded this model at start: to use another, start again with {how}."
            self.emit(SwitchFailed(message=line, model=model))
            return
        try:
            loaded = self._read_model(model)
        except ModelError as exc:
            self.emit(SwitchFailed(message=str(exc), model=model))
            return
        except Exception as exc:  # an unexpected loader bug still gets one line
            self.emit(SwitchFailed(message=f"Could not load {model}: {type(exc).__name__}: {exc}", model=model))
            return
        # Free the old model and cache before the new cache is allocated.
        self.loaded = self.service = self._text = None
        gc.collect()
        self.options = replace(self.options, model=model)
        try:
            self._install(loaded)
        except ModelError as exc:  # e.g. the cache settings do not fit this model
            self.emit(ModelFailed(message=str(exc)))

    def _read_model(self, source: Optional[str]) -> LoadedModel:
        """Load (and if need be download) a model; `cancel` stops a download."""
        self.cancelled.clear()
        opts = self.options
        return read_model(source, opts.layout, self.emit, self.cancelled.is_set, opts.shard, opts.cache)

    def _install(self, loaded: LoadedModel) -> None:
        """Make `loaded` the model in use, with an empty cache."""
        self.emit(ModelLoading(message="warming up (compiles the CPU kernels once)"))
        warm_up(loaded.model)
        self.service = CacheService(loaded, self.options.cache, self.options.prefill_chunk)
        self.loaded = loaded
        self._text = ChatText(loaded.template, loaded.tokenizer, loaded.config.vocab_size)
        self._new_key()
        self.emit(OptionsAdopted(options=self.options, cache=self.service.state()))
        info = {**loaded.info(), "thinking": self._text.thinking_switch}  # how thinking turns off, "" if never
        distribution = self.options.sampling.distribution_label()
        self.emit(ModelReady(info=info, cache=self.service.state(), distribution=distribution))

    def text(self) -> Optional[ChatText]:
        return self._text

    def unload(self) -> None:
        """Drop the model and the cache (on the thread that made them)."""
        self.loaded = self.service = self._text = self._key = None

    def shutdown(self, timeout: float = 10.0) -> None:
        self.unload()

    def _new_key(self) -> None:
        seed = self.options.sampling.seed
        self._key = mx.random.key(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))

    # --- options and needs ---------------------------------------------------------------

    def update(self, options: EngineOptions) -> None:
        """Take new options; a new cache setting makes the cache again, empty (refused in one line if it cannot)."""
        old = self.options
        if options.cache != old.cache and self.service is not None:
            try:
                service = CacheService(self.loaded, options.cache, options.prefill_chunk)
            except ModelError as exc:
                self.emit(OptionsRefused(message=str(exc), options=old))
                return
            self.service = None
            gc.collect()
            self.service = service
        self.options = replace(options, model=old.model)  # a model changes through switch_model only
        state = self.service.state() if self.service is not None else None
        self.emit(OptionsAdopted(options=self.options, cache=state, cache_reset=options.cache != old.cache))

    def set_needs(self, needs: StepNeeds) -> None:
        self.needs = needs  # one reference swap: the decode loop reads it whole, once per step

    def cancel(self) -> None:
        """Stop the reply in progress at the next token (or prefill chunk), or a download; safe from any thread."""
        self.cancelled.set()

    # --- requests ------------------------------------------------------------------------

    def generate(self, request: TurnRequest) -> None:
        if self.service is None:
            self.emit(TurnFailed(turn_id=request.turn_id, message=NO_MODEL))
            return
        self.cancelled.clear()
        self._key, turn_key = mx.random.split(self._key)
        self._serving = request.turn_id
        report = TurnReport(self.service, request, self.emit, self.clock)
        report.run(turn_key, lambda: self.needs, self.cancelled.is_set)
        self._serving = 0

    def hold(self, request: HoldRequest) -> None:
        if self.service is None:
            self.emit(TurnFailed(turn_id=0, message=NO_MODEL))
            return
        clock = TurnClock(now=self.clock)

        def progress(done: int, total: int) -> None:
            self.emit(PrefillProgress(turn_id=0, done=done, total=total, cache=self.service.state()))

        move = self.service.hold(request.ids, request.sink, progress)
        self.emit(
            CacheHeld(
                prompt_tokens=len(move.to_feed),
                reused_tokens=move.reused,
                rolled_back_tokens=move.rolled_back,
                rebuilt=move.rebuilt,
                seconds=clock.elapsed_s(),
                cache=self.service.state(),
            )
        )

    def score(self, request: ScoreRequest) -> None:
        if self.service is None:
            self.emit(TurnFailed(turn_id=request.turn_id, message=NO_MODEL))
            return
        try:
            steps = self.service.score(request.prompt, request.reply, request.top_k)
        except ModelError as exc:
            self.emit(TurnFailed(turn_id=request.turn_id, message=str(exc)))
            return
        rows = tuple((s.token_id, s.text, s.prob, s.top_k) for s in steps)
        self.emit(ReplyScored(turn_id=request.turn_id, steps=rows))

    def reset(self) -> None:
        """A new conversation: the cache emptied, and a fresh random key (the seed's first draws again)."""
        if self.service is None:
            self.emit(TurnFailed(turn_id=0, message=NO_MODEL))
            return
        self.service.clear()
        self._new_key()
        self.emit(ConversationReset(cache=self.service.state()))

    def recover(self, exc: Exception) -> None:
        """After an unexpected error: keep going, with the cache emptied so it cannot be inconsistent."""
        if self.loaded is not None and self.loaded.group is not None:
            self.loaded.group.failed(exc)  # a sharded model cannot recover here: one line, then the end
        traceback.print_exc()
        if self.service is not None:
            self.service.clear()
        line = f"Internal error ({type(exc).__name__}: {exc}); the cache was emptied."
        self.emit(TurnFailed(turn_id=self._serving, message=line))
        self._serving = 0
