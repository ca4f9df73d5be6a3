"""An engine stand-in for UI tests: it replays a recorded real conversation's events.

Every turn it plays (a message, an edit, a regenerate, a fork) is one of the recorded
replies, renumbered and placed on a tree of turns as the engine places its own
(`model.runtime.branches`): a fork keeps the forked reply's tokens before the cut,
forces the chosen one, and plays a recorded reply after it.
"""

import dataclasses
import queue
import threading
import time
from pathlib import Path

import event_codec

from model.errors import ModelError
from model.internals.needs import StepNeeds
from model.loading import hub
from model.loading.loader import resolve_source
from model.runtime.branches import Turn, TurnPlan, TurnTree
from model.runtime.events import (
    BranchSwitched,
    ConversationReset,
    DownloadProgress,
    HistoryRestored,
    InsideStep,
    ModelFailed,
    ModelLoading,
    ReplyScored,
    SwitchFailed,
    TokenGenerated,
    TopToken,
    TurnEnded,
    TurnFailed,
    TurnStarted,
)

RECORDING = Path(__file__).parent / "data" / "recorded_events.json"


class FakeEngine:
    """A ChatEngine (model.runtime.chat_engine; test_engine_protocol checks it); each `send` replays the next
    recorded turn."""

    def __init__(self, options, emit, delay: float = 0.0, recording: Path = RECORDING, gate_at: int = 1, download=None):
        self.options, self.emit, self.delay = options, emit, delay
        self.download = download  # stands in for snapshot_download when a switch fetches a Hub id (None: the real one)
        self.load_events, self.turns = event_codec.load(recording)
        self.sent: list[str] = []
        self.updates: list[dict] = []
        self.needs = StepNeeds(top_k=options.top_k_shown)
        self.needs_sent: list[StepNeeds] = []  # every set_needs, in order
        self._cancel = threading.Event()
        self._requests: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.turn_gate = threading.Event()  # cleared, it holds a turn before token `gate_at`
        self.turn_gate.set()
        self.gate_at = gate_at
        self.tree = TurnTree()
        self.steps: dict[int, list] = {}  # each turn's reply as TokenGenerated steps, for a fork's start
        self.branch_requests: list[tuple] = []  # (method, args) as the UI asked
        self.scores: list[int] = []  # the turns whose reply the UI asked to read again
        self._turn = 0
        self.views_tokenizer = None

    def start(self):
        self._thread.start()
        return self

    def send(self, text):
        self.sent.append(text)
        self._requests.put(("send", text))

    def edit(self, after, text):
        self._branch("edit", after, text)

    def regenerate(self, turn):
        self._branch("regenerate", turn)

    def fork(self, turn, at, token):
        self._branch("fork", turn, at, token)

    def switch_branch(self, turn):
        self._branch("switch_branch", turn)

    def _branch(self, method, *args):
        self.branch_requests.append((method, args))
        self._requests.put(("branch", (method, args)))

    def cancel(self):
        self._cancel.set()

    def reset(self, system=None):
        self._requests.put(("reset", system))

    def restore(self, system, messages):
        self.restored = (system, list(messages))
        self._requests.put(("restore", len(messages)))

    def restore_tree(self, system, turns, current):
        self.restored = (system, list(turns), current)
        self._requests.put(("restore_tree", (list(turns), current)))

    def switch_model(self, model):
        self._requests.put(("switch", model))

    def score(self, turn):
        self.scores.append(turn)
        self._requests.put(("score", turn))

    def set_needs(self, needs):
        self.needs = needs
        self.needs_sent.append(needs)

    def set_sampling(self, settings):
        self.update(sampling=settings)

    def update(self, **changes):
        self.updates.append(changes)

    def tokenizer(self):
        return self.views_tokenizer  # a replay has no model; a test may lend it the real tokenizer

    def shutdown(self, timeout=1.0):
        self._requests.put(("stop", None))

    def _run(self):
        if self.options.model is None:
            for event in self.load_events:
                self.emit(event)
        else:  # --model at start: resolved (and fetched) as a switch is, failing as the engine's load does
            self._switch(self.options.model, failed=ModelFailed)
        while True:
            kind, arg = self._requests.get()
            if kind == "stop":
                return
            if kind == "restore":
                self.emit(HistoryRestored(arg, 123, 0.5, self.load_events[-1].cache))
            if kind == "restore_tree":
                self._restore_tree(*arg)
            if kind == "reset":
                self.emit(ConversationReset(self.load_events[-1].cache, arg))
            if kind == "send":
                self._turn += 1
                self._replay(TurnPlan(self.tree.current, arg))
            if kind == "branch":
                self._run_branch(*arg)
            if kind == "switch":
                self._switch(arg)
            if kind == "score":
                self._score(arg)

    def _switch(self, source, failed=SwitchFailed):
        """As the engine does up to the weights: the source is resolved for real (a path, the Hub cache, a
        download through `model.loading.hub`), then the recorded model is announced under the new name."""
        self._cancel.clear()

        def fetch_hub(repo_id):
            def report(t):
                self.emit(DownloadProgress(t.repo_id, t.done_bytes, t.total_bytes, t.bytes_per_s))

            return hub.fetch(repo_id, report, self._cancel.is_set, download=self.download)

        try:
            path = resolve_source(source, lambda m: self.emit(ModelLoading(m)), fetch_hub)
        except ModelError as exc:
            self.emit(SwitchFailed(str(exc), source) if failed is SwitchFailed else ModelFailed(str(exc)))
            return
        ready = self.load_events[-1]
        self.options = dataclasses.replace(self.options, model=source)
        self.emit(
            dataclasses.replace(ready, info={**ready.info, "source": source or ready.info["source"], "path": str(path)})
        )

    def _recording(self):
        """The recorded turn to play next: sends pick by count (tests skip one by adding to `sent`), branches next."""
        return self.turns[(len(self.sent) - 1 + len(self.branch_requests)) % len(self.turns)]

    def _run_branch(self, method, args):
        if method == "switch_branch":
            self._switch_branch(*args)
            return
        self._turn += 1
        try:
            plan = getattr(self.tree, method)(*args)
        except ModelError as exc:
            self.emit(TurnFailed(self._turn, str(exc)))
            return
        self._replay(plan, forked=args[0] if method == "fork" else None)

    def _restore_tree(self, turns, current):
        """As the engine does: a tree of the saved turns, numbered after the turns this engine has run."""
        offset, self.tree = self._turn, TurnTree()
        self.tree.graft(turns, current, offset)
        self._turn += len(turns)
        path = tuple(self.tree.path())
        self.emit(HistoryRestored(2 * len(path), 123, 0.5, self.load_events[-1].cache, offset, path))

    def _score(self, turn):
        """A saved reply has no recording: each token stands for itself (`<id>`), its runner-up the next id."""
        steps = self.steps.get(turn)
        if steps is None:
            cache = self.load_events[-1].cache
            steps = [
                TokenGenerated(
                    turn,
                    i,
                    t,
                    f"<{t}>",
                    0.75,
                    (TopToken(t, f"<{t}>", 0.75), TopToken(t + 1, f"<{t + 1}>", 0.25)),
                    0.0,
                    0.0,
                    cache,
                )
                for i, t in enumerate(self.tree.get(turn).reply_ids)
            ]
            self.steps[turn] = steps  # so it can be forked
        self.emit(ReplyScored(turn, tuple((s.token_id, s.text, s.prob, s.top_k) for s in steps)))

    def _switch_branch(self, turn):
        try:
            path = self.tree.path(turn)
        except ModelError as exc:
            self.emit(TurnFailed(self._turn, str(exc)))
            return
        self.tree.current = turn
        # As if nothing were cached: every token of the path is read again.
        tokens = sum(len(self.tree.turns[n].reply_ids) for n in path)
        self.emit(BranchSwitched(turn, tuple(path), tokens, 0, 0.25, self.load_events[-1].cache))

    def _kept_steps(self, plan, forked):
        """A fork's start as steps: the forked reply's steps before the cut, then the forced token's."""
        if forked is None:
            return []
        steps = self.steps[forked]
        at = steps[plan.forked_at]
        forced = next((t for t in at.top_k if t.id == plan.token_forced), None)
        text = forced.text if forced is not None else f"<{plan.token_forced}>"
        prob = forced.prob if forced is not None else 0.0
        return steps[: plan.forked_at] + [dataclasses.replace(at, token_id=plan.token_forced, text=text, prob=prob)]

    def _replay(self, plan, forked=None):
        self._cancel.clear()
        turn, events, start = self._turn, self._recording(), len(plan.reply_prefix)
        steps = self._kept_steps(plan, forked)
        prefix_text = "".join(s.text for s in steps)
        text = prefix_text
        for event in events:
            if hasattr(event, "turn"):
                event = dataclasses.replace(event, turn=turn)
            if hasattr(event, "index"):
                event = dataclasses.replace(event, index=event.index + start)
            if isinstance(event, TurnStarted):
                event = dataclasses.replace(
                    event,
                    user=plan.user,
                    parent=plan.parent,
                    reply_prefix=plan.reply_prefix,
                    prefix_text=prefix_text,
                    forked_at=plan.forked_at,
                    token_forced=plan.token_forced,
                )
            if isinstance(event, InsideStep):
                # As the engine does: only what the open views ask for.
                event = self._watched(event)
                if event is None:
                    continue
            if isinstance(event, TokenGenerated):
                if event.index - start == self.gate_at:
                    self.turn_gate.wait(30)
                if self._cancel.is_set():
                    stats = dataclasses.replace(events[-1].stats, stop_reason="cancelled", generated_tokens=event.index)
                    self.emit(self._ended(plan, TurnEnded(turn, text, (), stats, event.cache), steps, text))
                    return
                if not event.thinking:  # as the engine's text: the answer alone
                    text += event.text
                steps.append(event)
                time.sleep(self.delay)
            if isinstance(event, TurnEnded):
                event = self._ended(plan, event, steps, text)
            self.emit(event)

    def _ended(self, plan, event, steps, text):
        """The turn joins the tree; its end event carries the whole reply and its path, as the engine's does."""
        stops = set(event.token_ids) - set(event.reply_ids)  # recorded: every id, then the reply without the stop
        reply_ids = tuple(s.token_id for s in steps if s.token_id not in stops)
        turn = event.turn
        if any(s.thinking for s in steps):
            text = text.lstrip("\n")  # the blank line after </think> separates; it is not the answer
        self.tree.add(Turn(turn, plan.parent, plan.user, reply_ids, text, plan.forked_at, plan.token_forced))
        self.steps[turn] = steps
        return dataclasses.replace(
            event,
            text=text,
            token_ids=plan.reply_prefix + event.token_ids,
            reply_ids=reply_ids,
            path=tuple(self.tree.path(turn)),
        )

    def _watched(self, event):
        needs = self.needs
        if not needs.watched:
            return None
        if needs.attention_layer is None:
            event = dataclasses.replace(event, layer=None, attention=(), attention_mean=(), most_attended=())
        if needs.lens_layers is None:
            event = dataclasses.replace(event, lens=(), lens_layers=())
        elif needs.lens_layers:  # recorded with every layer; keep those asked for
            rows = [(layer, row) for layer, row in zip(event.lens_layers, event.lens) if layer in needs.lens_layers]
            event = dataclasses.replace(event, lens=tuple(r for _, r in rows), lens_layers=tuple(l for l, _ in rows))
        return event
