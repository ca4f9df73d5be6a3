"""One chat, driven by plain synchronous calls: load, answer, branch, reset, restore, change settings.

All the logic of a turn lives here, so a test can drive it on its own thread;
`engine.Engine` only runs these calls on the one thread that owns MLX. Events
go out through `emit` as they happen. Every turn (a message, an edit, a
regenerate, a fork) is a plan on the conversation's tree (see `branches`),
then three short steps: prepare (work out what to prefill), stream (prefill,
then decode token by token) and close (record the turn, report the numbers).
"""

import gc
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import mlx.core as mx

from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings
from model.errors import ModelError
from model.internals.needs import StepNeeds
from model.internals.watch import StepWatcher, read_inside
from model.loading.chat_template import Message, encode_conversation
from model.loading.detokenizer import StreamingDetokenizer
from model.loading.loader import LoadedModel
from model.runtime.branches import ROOT, Turn, TurnPlan, TurnTree
from model.runtime.conversation import Conversation, TurnPrompt
from model.runtime.events import (
    BranchSwitched,
    ClusterStep,
    ConversationReset,
    Event,
    HistoryRestored,
    ModelFailed,
    ModelLoading,
    ModelReady,
    PrefillDone,
    PrefillProgress,
    ReplyScored,
    SwitchFailed,
    TokenGenerated,
    TopToken,
    TurnEnded,
    TurnFailed,
    TurnStarted,
)
from model.runtime.generate import PREFILL_CHUNK, Cancelled, Step, decode, prefill, warm_up
from model.runtime.inside_event import inside_step
from model.runtime.model_source import read_model, stop_ids
from model.runtime.rescore import score_reply
from model.runtime.settings import LookupSettings, SamplingSettings
from model.runtime.speculate import DraftPolicy, pays_off
from model.runtime.stats import TurnClock
from model.runtime.thinking import Tracker as ThinkingTracker
from model.runtime.thinking import split_reply

Emit = Callable[[Event], None]


@dataclass(frozen=True)
class EngineOptions:
    model: Optional[str] = None  # GGUF file, folder or Hub id; None is the default model
    layout: str = "auto"  # weight layout; see model.loading.weights.resolve_layout
    system: Optional[str] = None  # system prompt; None lets the template use its default
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    lookup: LookupSettings = field(default_factory=LookupSettings)  # prompt lookup (model.runtime.speculate)
    max_tokens: int = 512  # per reply
    top_k_shown: int = 10  # top-k rows per step until the views say otherwise (`set_needs`)
    thinking: Optional[bool] = None  # None: as the template has it; False asks a thinking model not to think
    prefill_chunk: int = PREFILL_CHUNK
    # Run on each loaded model before use: tensor parallel makes it this rank's share (model.distributed).
    shard: Optional[Callable[[LoadedModel], LoadedModel]] = None


@dataclass
class _Turn:
    """One turn in progress."""

    number: int
    plan: TurnPlan  # its place in the tree, its user message, a fork's forced reply start
    prompt: TurnPrompt
    clock: TurnClock
    detok: StreamingDetokenizer
    thought: ThinkingTracker  # which tokens are thinking, and the thinking and answer texts
    drafts: DraftPolicy  # prompt lookup's guesses in this reply
    generated: list[int] = field(default_factory=list)  # every sampled id, a stop token included
    stop_reason: str = "length"


class ChatSession:
    def __init__(self, options: EngineOptions, emit: Emit, clock: Callable[[], float] = time.perf_counter):
        self.options = options
        self.emit = emit
        self.clock = clock  # every time the panels show is read from this (tests pass a fake one)
        self.needs = StepNeeds(top_k=options.top_k_shown)  # read at every decode step; any thread may swap it
        self.cancelled = threading.Event()  # set from any thread; read once per token and prefill chunk
        self.loaded: Optional[LoadedModel] = None
        self.conversation: Optional[Conversation] = None
        self.turn = 0
        self._key: Optional[mx.array] = None

    # --- the model ---------------------------------------------------------

    def load(self) -> None:
        """Load the model and start a conversation; raises ModelError with a line for the user."""
        self._install(self._read_model(self.options.model))

    def switch_model(self, source: Optional[str]) -> None:
        """Replace the model; the old one is used until the new one has loaded, and kept if it cannot."""
        group = self.loaded.group if self.loaded is not None else None
        if group is not None:  # the followers hold their share of this model, loaded when they started
            how = f"--model {source} --ranks {group.size}" if source else f"--ranks {group.size}"
            self.emit(
                SwitchFailed(f"Every rank loaded this model at start: to use another, start again with {how}.", source)
            )
            return
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

    def _read_model(self, source: Optional[str]) -> LoadedModel:
        """Load (and if need be download) a model; `cancel` stops a download."""
        self.cancelled.clear()
        opts = self.options
        return read_model(source, opts.layout, self.emit, self.cancelled.is_set, opts.shard, opts.cache)

    def _install(self, loaded: LoadedModel) -> None:
        """Make `loaded` the model in use, with a new conversation and an empty cache."""
        tok = loaded.tokenizer
        self.emit(ModelLoading("warming up (compiles the CPU kernels once)"))
        warm_up(loaded.model)
        self.conversation = self._new_conversation(loaded, self.options.cache)
        self.loaded = loaded
        self.stop_ids = stop_ids(tok)
        self.lookup_pays = pays_off(loaded.model)  # prompt lookup's default for this model
        self._new_key()
        state = self.conversation.cache.state()
        info = {**loaded.info(), "thinking": self.conversation.thinking_switch}  # how thinking turns off, "" if never
        self.emit(ModelReady(info, state, self.options.sampling.distribution_label()))

    def open(self) -> bool:
        """`load`, with any failure reported as one ModelFailed line; whether the model is ready."""
        try:
            self.load()
            return True
        except ModelError as exc:
            self.emit(ModelFailed(str(exc)))
        except Exception as exc:  # an unexpected loader bug still gets one line
            self.emit(ModelFailed(f"Could not load the model: {type(exc).__name__}: {exc}"))
        return False

    def unload(self) -> None:
        """Drop the model and the cache (on the thread that made them)."""
        self.loaded = self.conversation = self._key = None

    def _new_conversation(self, loaded: LoadedModel, settings: CacheSettings) -> Conversation:
        cache = make_cache(loaded.model, settings)
        conv = Conversation(loaded.template, loaded.tokenizer, cache, settings, self.options.system)
        conv.thinking = self.options.thinking
        return conv

    def _new_key(self) -> None:
        seed = self.options.sampling.seed
        self._key = mx.random.key(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))

    # --- between turns -------------------------------------------------------

    def cancel(self) -> None:
        """Stop the reply in progress at the next token (or prefill chunk); safe from any thread."""
        self.cancelled.set()

    def reset(self, system: Optional[str] = None) -> None:
        self.options = replace(self.options, system=system)
        self.conversation.reset(system)
        self._new_key()
        self.emit(ConversationReset(self.conversation.cache.state(), system))

    def restore(self, system: Optional[str], messages: Sequence[Message]) -> None:
        """Start over on a saved conversation's path: its history is prefilled into a fresh cache."""
        self.reset(system)
        offset = self.turn
        self.turn += self.conversation.restore(list(messages), self.turn + 1)
        self._prefill_restored(len(messages), offset)

    def restore_tree(self, system: Optional[str], turns: Sequence[Turn], current: int) -> None:
        """Start over on a saved conversation's tree (see `Conversation.restore_tree`); the path ending at
        `current` is prefilled, and every other branch can be switched to, edited, regenerated or forked."""
        self.reset(system)
        offset = self.turn
        self.conversation.restore_tree(turns, current, offset)
        self.turn += len(turns)
        self._prefill_restored(2 * len(self.conversation.tree.path()), offset)

    def _prefill_restored(self, messages: int, offset: int) -> None:
        conv = self.conversation
        clock = TurnClock(now=self.clock)
        ids, _ = encode_conversation(
            self.loaded.template, self.loaded.tokenizer, conv.messages, add_generation_prompt=False
        )
        if ids:
            mx.eval(self._prefill(0, ids))
        state, path = conv.cache.state(), tuple(conv.tree.path())
        self.emit(HistoryRestored(messages, len(ids), clock.elapsed_s(), state, offset, path))

    def update(self, **changes: Any) -> None:
        """Change options; a new `cache` setting starts a new conversation (refused in one line if it cannot)."""
        old = self.options
        self.options = replace(old, **changes)
        if self.conversation is not None:
            self.conversation.thinking = self.options.thinking  # from the next turn
        if self.options.cache == old.cache:
            return
        try:
            self.conversation = self._new_conversation(self.loaded, self.options.cache)
        except ModelError as exc:
            self.options = replace(self.options, cache=old.cache)
            self.emit(TurnFailed(self.turn, str(exc)))
            return
        self.emit(ConversationReset(self.conversation.cache.state(), self.options.system))

    def refuse_without_model(self) -> None:
        """A request that needs a model, while none is loaded (the first load failed)."""
        self.emit(TurnFailed(self.turn, "No model is loaded: load another one first."))

    def recover(self, exc: Exception) -> None:
        """After an unexpected error: keep going, with the cache started over so it cannot be inconsistent."""
        if self.loaded is not None and self.loaded.group is not None:
            self.loaded.group.failed(exc)  # a sharded model cannot recover here: one line, then the end
        traceback.print_exc()
        if self.conversation is not None:
            self.conversation.history = []
            self.conversation.cache.reset()
        self.emit(TurnFailed(self.turn, f"Internal error ({type(exc).__name__}: {exc}); the cache was rebuilt."))

    # --- a turn, and the branches of the conversation -------------------------

    def answer(self, user_text: str, after: Optional[int] = None) -> None:
        """Run one turn on a user message, after turn `after` (the current turn by default)."""
        self.turn += 1
        if not user_text.strip():
            self.emit(TurnFailed(self.turn, "Type a message first: empty messages are not sent."))
            return
        readable = self.loaded.tokenizer.readable(user_text)
        note = ""
        if readable != user_text:
            lost = readable.count(chr(0xFFFD)) - user_text.count(chr(0xFFFD))
            note = f"{lost} character(s) this model has no token for were replaced with \ufffd."
        self._run(lambda tree: TurnPlan(tree.current if after is None else after, readable), note)

    def edit(self, after: int, text: str) -> None:
        """A new user message branching after turn `after` (0: from the system prompt)."""
        if after != ROOT and after not in self.conversation.tree.turns:
            self.turn += 1
            self.emit(TurnFailed(self.turn, f"There is no turn {after} to branch after."))
            return
        self.answer(text, after)

    def regenerate(self, turn: int) -> None:
        """A new reply to turn `turn`'s message, with the sampling settings now in force."""
        self.turn += 1
        self._run(lambda tree: tree.regenerate(turn))

    def fork(self, turn: int, at: int, token: int) -> None:
        """Turn `turn`'s reply cut before its token `at`, `token` forced there, generation continuing."""
        self.turn += 1
        vocab = self.loaded.config.vocab_size
        if not 0 <= token < vocab:
            self.emit(TurnFailed(self.turn, f"Token {token} is not in this model's vocabulary (0 to {vocab - 1})."))
            return
        if token in self.stop_ids:
            self.emit(TurnFailed(self.turn, f"Token {token} ends the reply; fork to a token that continues it."))
            return
        self._run(lambda tree: tree.fork(turn, at, token))

    def switch_branch(self, turn: int) -> None:
        """Show the path ending at `turn`; the cache follows it (BranchSwitched)."""
        conv = self.conversation
        clock = TurnClock(now=self.clock)
        try:
            path = conv.tree.path(turn)
        except ModelError as exc:
            self.emit(TurnFailed(self.turn, str(exc)))
            return
        conv.tree.current = turn
        prompt = conv.move_to(conv.render(turn), need_logits=False)
        if prompt.ids:
            mx.eval(self._prefill(turn, prompt.ids))
        state = conv.cache.state()
        self.emit(
            BranchSwitched(turn, tuple(path), len(prompt.ids), prompt.reused, clock.elapsed_s(), state, prompt.rebuilt)
        )

    def score(self, turn: int) -> None:
        """Turn `turn`'s reply read again, each token's probability and top-k (ReplyScored), so it can be forked."""
        conv, loaded = self.conversation, self.loaded
        if loaded.group is not None:  # the followers would wait for a pass they were not told of
            self.emit(TurnFailed(self.turn, "A saved reply's probabilities cannot be read again on a split model."))
            return
        try:
            t = conv.tree.get(turn)
        except ModelError as exc:
            self.emit(TurnFailed(self.turn, str(exc)))
            return
        k, prompt = self.needs.top_k or self.options.top_k_shown, conv.render(t.parent, t.user)
        end, capacity = len(prompt) + len(t.reply_ids), conv.cache.capacity
        if end > capacity:  # one pass over more than the cache ever held: memory unbounded, and not what it saw
            reason = f"Turn {turn}'s reply ends {end} tokens into the chat, past the cache's {capacity}"
            self.emit(TurnFailed(self.turn, f"{reason}: its probabilities are not read again."))
            return
        steps = score_reply(loaded.model, loaded.tokenizer, prompt, list(t.reply_ids), k)
        self.emit(ReplyScored(turn, tuple((s.token_id, s.text, s.prob, s.top_k) for s in steps)))

    def _run(self, plan_of: Callable[[TurnTree], TurnPlan], note: str = "") -> None:
        """Plan turn `self.turn` on the tree, then prepare, stream and close it."""
        try:
            plan = plan_of(self.conversation.tree)
        except ModelError as exc:
            self.emit(TurnFailed(self.turn, str(exc)))
            return
        turn = self._prepare(plan, note)
        if turn is not None:
            self._stream(turn)
            self._close(turn)

    def _prepare(self, plan: TurnPlan, note: str) -> Optional[_Turn]:
        """Work out what this turn must prefill; None if it cannot be answered."""
        self.cancelled.clear()
        clock = TurnClock(now=self.clock)
        try:
            prompt = self.conversation.prompt_for(plan.user, plan.parent, plan.reply_prefix)
        except ModelError as exc:
            self.emit(TurnFailed(self.turn, str(exc)))
            return None
        clock.prompt_tokens, clock.reused_tokens = len(prompt.ids), prompt.reused
        note = " ".join(n for n in (note, prompt.note) if n)
        detok = StreamingDetokenizer(self.loaded.tokenizer)
        thought = ThinkingTracker(self.conversation.markers, prompt.opens_thinking)
        for t in plan.reply_prefix:  # a fork's forced start, prefilled with the prompt; not generated now
            thinking = thought.step(t, count=False)
            thought.add_text("" if thought.is_marker(t) else detok.add(t), thinking)
        self.emit(
            TurnStarted(
                self.turn, prompt.user, len(prompt.ids), prompt.reused, note, plan.parent, plan.reply_prefix,
                thought.answer(), plan.forked_at, plan.token_forced, prompt.rebuilt, prompt.rolled_back,
            )
        )  # fmt: skip
        drafts = DraftPolicy(self.options.lookup.resolved(self.lookup_pays), frozenset(self.stop_ids))
        return _Turn(self.turn, plan, prompt, clock, detok, thought, drafts)

    def _prefill(self, turn: int, ids: list[int], cancelled: Callable[[], bool] = lambda: False) -> mx.array:
        """Feed `ids` in chunks, recording each and reporting progress after it; the logits after the last."""
        conv, done = self.conversation, 0

        def on_chunk(chunk: list[int]) -> None:
            nonlocal done
            conv.fed(chunk)
            done += len(chunk)
            self.emit(PrefillProgress(turn, done, len(ids), conv.cache.state()))

        return prefill(self.loaded.model, conv.cache, ids, self.options.prefill_chunk, on_chunk, cancelled)

    def _stream(self, turn: _Turn) -> None:
        """Prefill, then decode until a stop token, the length limit or a cancel."""
        conv, model = self.conversation, self.loaded.model
        try:
            logits = self._prefill(turn.number, turn.prompt.ids, self.cancelled.is_set)
            self._key, turn_key = mx.random.split(self._key)
            watcher = StepWatcher(model, conv.cache, lambda: self.needs, now=self.clock)
            steps = decode(
                model,
                conv.cache,
                logits,
                self.options.sampling,
                self.options.max_tokens,
                key=turn_key,
                recent_ids=conv.held_ids(),
                top_k=lambda: self.needs.top_k,
                forward=watcher.forward,
                lookup=turn.drafts,
                watched=watcher.due,
            )
            for step in steps:
                if self._report(turn, step):
                    break
            steps.close()  # rolls back the token fed ahead, if any
        except Cancelled:
            turn.stop_reason = "cancelled"

    def _report(self, turn: _Turn, step: Step) -> bool:
        """Emit one generated token (and what a watched step saw); whether the turn stops here."""
        conv, tok = self.conversation, self.loaded.tokenizer
        turn.clock.token_ready()
        if not turn.generated:
            self.emit(PrefillDone(turn.number, turn.clock.prefill(), conv.cache.state()))
        turn.generated.append(step.token_id)
        index = len(turn.plan.reply_prefix) + len(turn.generated) - 1  # decoding resumes after a fork's start
        is_stop = step.token_id in self.stop_ids
        thinking = turn.thought.step(step.token_id)
        # The markers are not text: the thinking is shown apart from the answer.
        text = "" if is_stop or turn.thought.is_marker(step.token_id) else turn.detok.add(step.token_id)
        turn.thought.add_text(text, thinking)
        top = tuple(TopToken(i, tok.piece(i), p) for i, p in zip(step.top_ids, step.top_probs))
        live, elapsed, state = turn.clock.live_tok_s(), turn.clock.elapsed_s(), conv.cache.state()
        drafted, drafts = step.drafted, turn.drafts.counts()
        self.emit(
            TokenGenerated(
                turn.number, index, step.token_id, text, step.prob, top, live, elapsed, state, thinking, drafted, drafts
            )
        )
        group = self.loaded.group
        if group is not None:
            self.emit(ClusterStep(turn.number, index, group.figures(), group.timing()))
        if step.inside is not None:
            # The forward pass that predicted this token consumed the ones before it.
            fed = conv.history + turn.generated[:-1]
            self.emit(inside_step(turn.number, index, read_inside(step.inside), fed, tok))
        cancelled = self.cancelled.is_set()
        if is_stop or cancelled:
            turn.stop_reason = "stop" if is_stop else "cancelled"
        return is_stop or cancelled

    def _close(self, turn: _Turn) -> None:
        """Record the exchange as the user saw it, and report the turn's numbers."""
        thought, prompt = turn.thought, turn.prompt
        thought.add_text(turn.detok.flush(), thought.inside)
        conv, plan, text = self.conversation, turn.plan, thought.answer()
        whole = (*plan.reply_prefix, *turn.generated)
        reply_ids = tuple(t for t in whole if t not in self.stop_ids)
        # Every generated token but the last went into the cache (the one fed
        # ahead was rolled back). The next turn's prompt starts with the last
        # reply token, if it was not a stop token, then the closing markup.
        conv.fed(turn.generated[:-1])
        split = split_reply(reply_ids, conv.markers, self.loaded.tokenizer, prompt.opens_thinking)
        conv.add_turn(
            Turn(turn.number, plan.parent, prompt.user, reply_ids, text, plan.forked_at, plan.token_forced, split)
        )
        stats = replace(
            turn.clock.finish(turn.stop_reason, turn.drafts.counts()),
            thinking_tokens=thought.thinking_tokens,
            rolled_back_tokens=prompt.rolled_back,
        )
        path = tuple(conv.tree.path(turn.number))
        self.emit(TurnEnded(turn.number, text, whole, stats, conv.cache.state(), reply_ids, path, thought.thinking()))
