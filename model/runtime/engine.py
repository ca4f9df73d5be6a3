"""The engine: one long-lived thread that owns MLX, the model and the conversation.

MLX streams belong to the thread that made them, so every load, prefill and
decode happens here. Callers send requests (a message, cancel, reset,
settings) and receive events through `emit`, which runs on this thread:
the UI wraps each event in a Textual message, the CLI puts it on a queue.
"""

import gc
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Optional

import mlx.core as mx

from model.cache.kv_factory import make_cache
from model.errors import ModelError
from model.internals.watch import Inside, StepWatcher, Watch, read_inside
from model.loading import hub
from model.loading.chat_template import encode_conversation
from model.loading.detokenizer import StreamingDetokenizer
from model.loading.loader import LoadedModel, load_model
from model.runtime.branches import ROOT, Turn, TurnPlan
from model.runtime.conversation import Conversation
from model.runtime.events import (
    AttendedToken,
    BranchSwitched,
    ConversationReset,
    DownloadProgress,
    Event,
    HistoryRestored,
    InsideStep,
    ModelFailed,
    ModelLoading,
    ModelReady,
    PrefillDone,
    PrefillProgress,
    SwitchFailed,
    TokenGenerated,
    TopToken,
    TurnEnded,
    TurnFailed,
    TurnStarted,
)
from model.runtime.generate import PREFILL_CHUNK, Cancelled, decode, prefill, warm_up
from model.runtime.settings import CacheSettings, SamplingSettings
from model.runtime.stats import TurnClock

MOST_ATTENDED = 8  # positions named in an InsideStep

END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<end_of_turn>",
)


@dataclass(frozen=True)
class EngineOptions:
    model: Optional[str] = None  # GGUF file, folder or Hub id; None is the default model
    layout: str = "auto"  # weight layout; see model.loading.weights.resolve_layout
    system: Optional[str] = None  # system prompt; None lets the template use its default
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    max_tokens: int = 512  # per reply
    top_k_shown: int = 10  # rows in the top-k panel; 0 computes none
    prefill_chunk: int = PREFILL_CHUNK
    # Run on each loaded model before use: tensor parallel makes it this rank's share (model.distributed).
    shard: Optional[Callable[[LoadedModel], LoadedModel]] = None


@dataclass(frozen=True)
class _Send:
    text: str


@dataclass(frozen=True)
class _Reset:
    system: Optional[str]


@dataclass(frozen=True)
class _Restore:
    system: Optional[str]
    messages: tuple  # chat_template.Message, in order


@dataclass(frozen=True)
class _Switch:
    model: Optional[str]  # as --model takes it; None is the default model


@dataclass(frozen=True)
class _Branch:
    method: str  # an Engine method run on the engine thread: edit_now, regenerate_now, fork_now, switch_branch_now
    args: tuple


@dataclass(frozen=True)
class _Update:
    changes: dict  # EngineOptions fields to replace


_SHUTDOWN = object()


class Engine:
    def __init__(
        self, options: EngineOptions, emit: Callable[[Event], None], clock: Callable[[], float] = time.perf_counter
    ):
        self.options = options
        self.emit = emit
        self.clock = clock  # every time the panels show is read from this (tests pass a fake one)
        self._requests: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="glasschat-engine", daemon=True)
        self.loaded: Optional[LoadedModel] = None
        self.conversation: Optional[Conversation] = None
        self._turn = 0
        self._key = None
        self.watch = Watch()  # what the open views want from decode steps; read at every step

    # --- called from any thread ------------------------------------------

    def start(self) -> "Engine":
        self._thread.start()
        return self

    def send(self, text: str) -> None:
        self._requests.put(_Send(text))

    def cancel(self) -> None:
        """Stop the reply in progress at the next token (or prefill chunk)."""
        self._cancel.set()

    def reset(self, system: Optional[str] = None) -> None:
        self._requests.put(_Reset(system))

    def restore(self, system: Optional[str], messages: list) -> None:
        """Start over on a saved conversation: its history is prefilled into a fresh cache."""
        self._requests.put(_Restore(system, tuple(messages)))

    def switch_model(self, model: Optional[str]) -> None:
        """Load another model (downloading it if it is a Hub id) and start a new conversation on it.

        The model in use stays until the new one is ready; if it cannot be loaded, or `cancel`
        stops its download, nothing changes (SwitchFailed)."""
        self._requests.put(_Switch(model))

    def edit(self, after: int, text: str) -> None:
        """A new user message branching after turn `after` (0: from the system prompt)."""
        self._requests.put(_Branch("edit_now", (after, text)))

    def regenerate(self, turn: int) -> None:
        """A new reply to turn `turn`'s message, with the sampling settings now in force."""
        self._requests.put(_Branch("regenerate_now", (turn,)))

    def fork(self, turn: int, at: int, token: int) -> None:
        """Turn `turn`'s reply cut before its token `at`, `token` forced there, generation continuing."""
        self._requests.put(_Branch("fork_now", (turn, at, token)))

    def switch_branch(self, turn: int) -> None:
        """Show the path ending at `turn`; the cache follows it."""
        self._requests.put(_Branch("switch_branch_now", (turn,)))

    def set_watch(self, watch: Watch) -> None:
        """Open or close the inside views; takes effect at the next decode step, even mid-reply."""
        self.watch = watch  # one reference swap: the engine thread reads it whole

    def set_sampling(self, settings: SamplingSettings) -> None:
        self.update(sampling=settings)

    def update(self, **changes) -> None:
        """Change options between turns; a new `cache` setting starts a new conversation."""
        self._requests.put(_Update(changes))

    def shutdown(self, timeout: float = 10.0) -> None:
        self._cancel.set()
        self._requests.put(_SHUTDOWN)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._stopped.wait(timeout)

    # --- the engine thread -------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            # Free the model and cache here, on the thread that made them, so a
            # closed engine holds no memory while its thread is parked.
            self.loaded = self.conversation = self._key = None
            gc.collect()
            mx.synchronize()
            self._stopped.set()
            # Park instead of returning. When a thread that ran MLX work
            # exits, its thread-local stream is torn down, and with OpenBLAS
            # loaded that intermittently aborts the process ("terminate called
            # without an active exception"). A parked daemon thread never exits.
            threading.Event().wait()

    def _serve(self) -> None:
        try:
            self.load()
        except ModelError as exc:
            self.emit(ModelFailed(str(exc)))
        except Exception as exc:  # an unexpected loader bug still gets one line
            self.emit(ModelFailed(f"Could not load the model: {type(exc).__name__}: {exc}"))
        while True:
            request = self._requests.get()
            if request is _SHUTDOWN:
                return
            if isinstance(request, _Switch):
                self.switch_now(request.model)
                continue
            if self.loaded is None:  # the first load failed: only another model can help
                self.emit(TurnFailed(self._turn, "No model is loaded: load another one first."))
                continue
            try:
                if isinstance(request, _Send):
                    self.answer(request.text)
                elif isinstance(request, _Reset):
                    self.reset_now(request.system)
                elif isinstance(request, _Restore):
                    self.restore_now(request.system, list(request.messages))
                elif isinstance(request, _Update):
                    self.apply_update(request.changes)
                elif isinstance(request, _Branch):
                    getattr(self, request.method)(*request.args)
            except Exception as exc:
                if self.loaded.group is not None:
                    self.loaded.group.failed(exc)  # a sharded model cannot recover here: one line, then the end
                # Keep the app alive; start the cache over so it cannot be inconsistent.
                traceback.print_exc()
                self.conversation.history = []
                self.conversation.cache.reset()
                self.emit(
                    TurnFailed(self._turn, f"Internal error ({type(exc).__name__}: {exc}); the cache was rebuilt.")
                )

    def load(self) -> None:
        """Load the model and build the conversation (on the engine thread, or in a script without one)."""
        self._install(self._read_model(self.options.model))

    def _read_model(self, source: Optional[str]) -> LoadedModel:
        """Load (and if need be download) a model; `cancel` stops a download."""
        self._cancel.clear()

        def fetch_hub(repo_id: str):
            report = lambda t: self.emit(DownloadProgress(t.repo_id, t.done_bytes, t.total_bytes, t.bytes_per_s))  # noqa: E731
            return hub.fetch(repo_id, report, self._cancel.is_set)

        progress = lambda m: self.emit(ModelLoading(m))  # noqa: E731
        loaded = load_model(source, self.options.layout, progress=progress, fetch_hub=fetch_hub)
        return self.options.shard(loaded) if self.options.shard else loaded

    def switch_now(self, source: Optional[str]) -> None:
        """Replace the model; the old one is used until the new one has loaded, and kept if it cannot."""
        try:
            loaded = self._read_model(source)
        except ModelError as exc:
            self.emit(SwitchFailed(str(exc), source))
            return
        except Exception as exc:  # an unexpected loader bug still gets one line
            self.emit(SwitchFailed(f"Could not load {source}: {type(exc).__name__}: {exc}", source))
            return
        # Free the old model and cache before the new cache is allocated.
        self.loaded = self.conversation = None
        gc.collect()
        self.options = replace(self.options, model=source)
        try:
            self._install(loaded)
        except ModelError as exc:  # e.g. the cache settings do not fit this model
            self.emit(ModelFailed(str(exc)))

    def _install(self, loaded: LoadedModel) -> None:
        """Make `loaded` the model in use, with a new conversation and an empty cache."""
        opts, tok = self.options, loaded.tokenizer
        self.emit(ModelLoading("warming up (compiles the CPU kernels once)"))
        warm_up(loaded.model)
        cache = make_cache(loaded, opts.cache)
        self.conversation = Conversation(loaded.template, tok, cache, opts.cache, opts.system)
        self.loaded = loaded
        self.stop_ids = {tok.eos_id} | {tok.token_id(t) for t in END_OF_TURN_TOKENS}
        self.stop_ids.discard(None)
        self._new_key()
        self.emit(ModelReady(self.loaded.info(), cache.state(), opts.sampling.distribution_label()))

    def _new_key(self) -> None:
        seed = self.options.sampling.seed
        self._key = mx.random.key(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))

    def apply_update(self, changes: dict) -> None:
        old_cache = self.options.cache
        self.options = replace(self.options, **changes)
        if self.options.cache != old_cache:
            try:
                cache = make_cache(self.loaded, self.options.cache)
                self.conversation = Conversation(
                    self.loaded.template, self.loaded.tokenizer, cache, self.options.cache, self.options.system
                )
            except ModelError as exc:
                self.options = replace(self.options, cache=old_cache)
                self.emit(TurnFailed(self._turn, str(exc)))
                return
            self.emit(ConversationReset(cache.state(), self.options.system))

    def restore_now(self, system: Optional[str], messages: list) -> None:
        self.reset_now(system)
        conv = self.conversation
        self._turn += conv.restore(messages, self._turn + 1)
        clock = TurnClock(now=self.clock)
        ids, _ = encode_conversation(
            self.loaded.template, self.loaded.tokenizer, conv.messages, add_generation_prompt=False
        )
        done = 0

        def on_chunk(chunk):
            nonlocal done
            conv.fed(chunk)
            done += len(chunk)
            self.emit(PrefillProgress(0, done, len(ids), conv.cache.state()))

        if ids:
            mx.eval(prefill(self.loaded.model, conv.cache, ids, self.options.prefill_chunk, on_chunk))
        self.emit(HistoryRestored(len(messages), len(ids), clock.elapsed_s(), conv.cache.state()))

    def reset_now(self, system: Optional[str]) -> None:
        self.options = replace(self.options, system=system)
        self.conversation.reset(system)
        self._new_key()
        self.emit(ConversationReset(self.conversation.cache.state(), system))

    def _inside_event(self, turn: int, index: int, inside: Inside, fed: list[int]) -> InsideStep:
        tok = self.loaded.tokenizer
        most = ()
        if inside.attention:
            # The cache holds the pinned sink, then everything after what was evicted.
            held = fed[: inside.sink] + fed[inside.sink + inside.evicted_total :]
            mean = inside.attention_mean
            if len(held) != len(mean):
                # The conversation's record and the cache disagree, so no name could be trusted,
                # nor the next turn's reuse of the cache: fail loudly (the turn ends, the cache is rebuilt).
                raise RuntimeError(f"the cache attends over {len(mean)} positions but holds {len(held)} known tokens")
            order = sorted(range(len(mean)), key=mean.__getitem__, reverse=True)[:MOST_ATTENDED]
            most = tuple(AttendedToken(p, tok.piece(held[p]), mean[p]) for p in order)
        lens = tuple(
            tuple(TopToken(i, tok.piece(i), p) for i, p in zip(ids, probs))
            for ids, probs in zip(inside.lens_ids, inside.lens_probs)
        )
        return InsideStep(
            turn,
            index,
            inside.layer,
            inside.attention,
            inside.sink,
            most,
            lens,
            inside.lens_layers,
            inside.attention_mean,
        )

    def answer(self, user_text: str, after: Optional[int] = None) -> None:
        """Run one turn, emitting its events (on the engine thread, or in a script without one).

        The message follows turn `after` (the current turn by default)."""
        self._turn += 1
        turn, tok = self._turn, self.loaded.tokenizer
        if not user_text.strip():
            self.emit(TurnFailed(turn, "Type a message first: empty messages are not sent."))
            return
        readable = tok.readable(user_text)
        note = ""
        if readable != user_text:
            note = (
                f"{readable.count(chr(0xFFFD)) - user_text.count(chr(0xFFFD))} character(s) this model "
                "has no token for were replaced with \ufffd."
            )
        self._plan_and_run(turn, lambda tree: TurnPlan(tree.current if after is None else after, readable), note)

    def edit_now(self, after: int, text: str) -> None:
        if after != ROOT and after not in self.conversation.tree.turns:
            self._turn += 1
            self.emit(TurnFailed(self._turn, f"There is no turn {after} to branch after."))
            return
        self.answer(text, after)

    def regenerate_now(self, turn: int) -> None:
        self._turn += 1
        self._plan_and_run(self._turn, lambda tree: tree.regenerate(turn))

    def fork_now(self, turn: int, at: int, token: int) -> None:
        self._turn += 1
        vocab = self.loaded.config.vocab_size
        if not 0 <= token < vocab:
            self.emit(TurnFailed(self._turn, f"Token {token} is not in this model's vocabulary (0 to {vocab - 1})."))
            return
        if token in self.stop_ids:
            self.emit(TurnFailed(self._turn, f"Token {token} ends the reply; fork to a token that continues it."))
            return
        self._plan_and_run(self._turn, lambda tree: tree.fork(turn, at, token))

    def switch_branch_now(self, turn: int) -> None:
        conv = self.conversation
        clock = TurnClock(now=self.clock)
        try:
            path = conv.tree.path(turn)
        except ModelError as exc:
            self.emit(TurnFailed(self._turn, str(exc)))
            return
        conv.tree.current = turn
        prompt = conv.move_to(conv.render(turn), need_logits=False)
        done = 0

        def on_chunk(chunk):
            nonlocal done
            conv.fed(chunk)
            done += len(chunk)
            self.emit(PrefillProgress(turn, done, len(prompt.ids), conv.cache.state()))

        if prompt.ids:
            mx.eval(prefill(self.loaded.model, conv.cache, prompt.ids, self.options.prefill_chunk, on_chunk))
        self.emit(
            BranchSwitched(
                turn, tuple(path), len(prompt.ids), prompt.reused, clock.elapsed_s(), conv.cache.state(), prompt.rebuilt
            )
        )

    def _plan_and_run(self, turn: int, plan_of, note: str = "") -> None:
        try:
            plan = plan_of(self.conversation.tree)
        except ModelError as exc:
            self.emit(TurnFailed(turn, str(exc)))
            return
        self._run_turn(turn, plan, note)

    def _run_turn(self, turn: int, plan: TurnPlan, extra_note: str = "") -> None:
        conv, opts, tok = self.conversation, self.options, self.loaded.tokenizer
        self._cancel.clear()
        clock = TurnClock(now=self.clock)
        user_text = plan.user
        try:
            prompt = conv.prompt_for(user_text, plan.parent, plan.reply_prefix)
        except ModelError as exc:
            self.emit(TurnFailed(turn, str(exc)))
            return
        clock.prompt_tokens, clock.reused_tokens = len(prompt.ids), prompt.reused
        note = " ".join(n for n in (extra_note, prompt.note) if n)
        detok = StreamingDetokenizer(tok)
        for t in plan.reply_prefix:
            detok.add(t)
        self.emit(
            TurnStarted(
                turn,
                user_text,
                len(prompt.ids),
                prompt.reused,
                note,
                plan.parent,
                plan.reply_prefix,
                detok.text,
                plan.forked_at,
                plan.token_forced,
                prompt.rebuilt,
            )
        )

        done = 0

        def on_chunk(chunk):
            nonlocal done
            conv.fed(chunk)
            done += len(chunk)
            self.emit(PrefillProgress(turn, done, len(prompt.ids), conv.cache.state()))

        # A fork's forced start was prefilled with the prompt; decoding resumes after it.
        generated: list[int] = []
        start = len(plan.reply_prefix)
        stop_reason = "length"
        try:
            logits = prefill(
                self.loaded.model, conv.cache, prompt.ids, opts.prefill_chunk, on_chunk, self._cancel.is_set
            )
            self._key, turn_key = mx.random.split(self._key)
            watcher = StepWatcher(self.loaded.model, conv.cache, lambda: self.watch, now=self.clock)
            steps = decode(
                self.loaded.model,
                conv.cache,
                logits,
                opts.sampling,
                opts.max_tokens,
                key=turn_key,
                recent_ids=conv.held_ids(),
                top_k=opts.top_k_shown,
                forward=watcher.forward,
            )
            for step in steps:
                clock.token_ready()
                if len(clock.token_times) == 1:
                    self.emit(PrefillDone(turn, clock.prefill(), conv.cache.state()))
                generated.append(step.token_id)
                is_stop = step.token_id in self.stop_ids
                text = "" if is_stop else detok.add(step.token_id)
                self.emit(
                    TokenGenerated(
                        turn,
                        start + len(generated) - 1,
                        step.token_id,
                        text,
                        step.prob,
                        tuple(TopToken(i, tok.piece(i), p) for i, p in zip(step.top_ids, step.top_probs)),
                        clock.live_tok_s(),
                        clock.elapsed_s(),
                        conv.cache.state(),
                    )
                )
                if step.inside is not None:
                    # The forward pass that predicted this token consumed the ones before it.
                    self.emit(
                        self._inside_event(
                            turn,
                            start + len(generated) - 1,
                            read_inside(step.inside),
                            conv.history + generated[:-1],
                        )
                    )
                if is_stop:
                    stop_reason = "stop"
                    break
                if self._cancel.is_set():
                    stop_reason = "cancelled"
                    break
            steps.close()  # rolls back the token fed ahead, if any
        except Cancelled:
            stop_reason = "cancelled"
        detok.flush()
        whole = list(plan.reply_prefix) + generated
        reply_ids = tuple(t for t in whole if t not in self.stop_ids)
        # Every generated token but the last went into the cache (the one fed
        # ahead was rolled back). The next turn's prompt starts with the last
        # reply token, if it was not a stop token, then the closing markup.
        conv.fed(generated[:-1])
        conv.add_turn(Turn(turn, plan.parent, user_text, reply_ids, detok.text, plan.forked_at, plan.token_forced))
        self.emit(
            TurnEnded(
                turn,
                detok.text,
                tuple(whole),
                clock.finish(stop_reason),
                conv.cache.state(),
                reply_ids,
                tuple(conv.tree.path(turn)),
            )
        )
