"""An engine stand-in for UI tests: it replays a recorded real conversation's events.

It is a `ChatEngine` (test_engine_protocol checks its signatures against the Protocol):
every turn it is asked for (a message, an edit, a regenerate, a fork) plays the next
recorded reply under the request's turn id, and a fork's reply starts with its forced
tokens. It keeps no conversation: the app owns that, as with the real engine. Its text
side (`ReplayText`) renders a conversation to stand-in ids, since nothing reads them but
this fake; a test may lend it the real tokenizer for the views that show tokens.
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
from model.runtime.events import (
    CacheHeld,
    ConversationReset,
    DownloadProgress,
    InsideStep,
    ModelFailed,
    ModelLoading,
    OptionsAdopted,
    OptionsRefused,
    ReplyScored,
    SwitchFailed,
    TokenGenerated,
    TopToken,
    TurnEnded,
    TurnStarted,
)
from model.runtime.requests import TurnRequest

RECORDING = Path(__file__).parent / "data" / "recorded_events.json"


class ReplayText:
    """A recorded model's text side, as far as a replay needs: each message becomes one stand-in id per character."""

    vocab_size = 49152  # the recorded model's (SmolLM2)
    stop_ids = frozenset({2})  # <|im_end|>
    markers = None
    thinking_switch = "enable_thinking"  # what the recordings' templates have

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer  # lent by a test for the views that show tokens; None otherwise

    def render(self, messages, generation_prompt, thinking_on=None):
        ids = []
        for m in messages:
            ids += [1, *(m.token_ids or (ord(c) % 1000 + 10 for c in m.content)), 2]
        return ids + ([1] if generation_prompt else [])

    def sink_length(self, system):
        return 4

    def readable(self, text):
        return text

    def opens_thinking(self, prompt_ids):
        return False

    def split_reply(self, reply_ids, inside=False):
        return None


class FakeEngine:
    """A ChatEngine; each turn request replays the next recorded turn."""

    def __init__(self, options, emit, delay: float = 0.0, recording: Path = RECORDING, gate_at: int = 1, download=None):
        self.options, self.emit, self.delay = options, emit, delay
        self.download = download  # stands in for snapshot_download when a switch fetches a Hub id (None: the real one)
        self.load_events, self.turns = event_codec.load(recording)
        self.requests: list = []  # every request, in order: what the app asked for
        self.updates: list = []  # the options each `update` asked for
        self.needs = StepNeeds(top_k=options.top_k_shown)
        self.needs_sent: list[StepNeeds] = []  # every set_needs, in order
        self.refuse_cache = None  # a test sets it to a line: a new cache setting is then refused with it
        self._cancel = threading.Event()
        self._requests: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.turn_gate = threading.Event()  # cleared, it holds a turn before token `gate_at`
        self.turn_gate.set()
        self.gate_at = gate_at
        self.played = 0  # recorded turns played so far
        self.replies: list[list[tuple[int, str, tuple]]] = []  # each reply played: (id, text, top-k) per token
        self.lent_tokenizer = None

    # --- for the tests ----------------------------------------------------------------------

    def skip_recording(self) -> None:
        """Play the recording after the next one (the long reply, say) for the next turn."""
        self.played += 1

    @property
    def turn_requests(self) -> list:
        return [r for r in self.requests if isinstance(r, TurnRequest)]

    # --- the ChatEngine methods ---------------------------------------------------------

    def start(self):
        self._thread.start()
        return self

    def text(self):
        return ReplayText(self.lent_tokenizer)

    def generate(self, request):
        self.requests.append(request)
        self._requests.put((self._replay, request))

    def hold(self, request):
        self.requests.append(request)
        self._requests.put((self._hold, request))

    def score(self, request):
        self.requests.append(request)
        self._requests.put((self._score, request))

    def reset(self):
        self._requests.put((self._reset, None))

    def cancel(self):
        self._cancel.set()

    def set_needs(self, needs):
        self.needs = needs
        self.needs_sent.append(needs)

    def update(self, options):
        self.updates.append(options)
        self._requests.put((self._update, options))

    def switch_model(self, model):
        self._requests.put((self._switch, model))

    def shutdown(self, timeout=1.0):
        self._requests.put((None, None))

    # --- on the fake's thread --------------------------------------------------------------

    @property
    def cache(self):
        return self.load_events[-1].cache

    def _run(self):
        if self.options.model is None:
            for event in self.load_events:
                self.emit(event)
        else:  # --model at start: resolved (and fetched) as a switch is, failing as the engine's load does
            self._switch(self.options.model, failed=ModelFailed)
        while True:
            call, arg = self._requests.get()
            if call is None:
                return
            call(arg)

    def _switch(self, source, failed=SwitchFailed):
        """As the engine does up to the weights: the source is resolved for real (a path, the Hub cache, a
        download through `model.loading.hub`), then the recorded model is announced under the new name."""
        self._cancel.clear()

        def fetch_hub(repo_id):
            def report(t):
                self.emit(
                    DownloadProgress(
                        repo_id=t.repo_id, done_bytes=t.done_bytes, total_bytes=t.total_bytes, bytes_per_s=t.bytes_per_s
                    )
                )

            return hub.fetch(repo_id, report, self._cancel.is_set, download=self.download)

        try:
            path = resolve_source(source, lambda m: self.emit(ModelLoading(message=m)), fetch_hub)
        except ModelError as exc:
            self.emit(
                SwitchFailed(message=str(exc), model=source)
                if failed is SwitchFailed
                else ModelFailed(message=str(exc))
            )
            return
        ready = self.load_events[-1]
        self.options = dataclasses.replace(self.options, model=source)
        self.emit(OptionsAdopted(options=self.options, cache=self.cache))
        self.emit(
            dataclasses.replace(ready, info={**ready.info, "source": source or ready.info["source"], "path": str(path)})
        )

    def _update(self, options):
        """As the engine does: options adopted and reported; a new cache setting empties the cache (or is refused)."""
        reset = options.cache != self.options.cache
        if reset and self.refuse_cache:
            self.emit(OptionsRefused(message=self.refuse_cache, options=self.options))
            return
        self.options = dataclasses.replace(options, model=self.options.model)
        self.emit(OptionsAdopted(options=self.options, cache=self.cache, cache_reset=reset))

    def _reset(self, _):
        self.emit(ConversationReset(cache=self.cache))

    def _hold(self, request):
        # As if nothing were cached: every id is read again.
        self.emit(
            CacheHeld(
                prompt_tokens=len(request.ids), reused_tokens=0, rolled_back_tokens=0, rebuilt=False, seconds=0.25,
                cache=self.cache,
            )
        )  # fmt: skip

    def _score(self, request):
        """A saved reply has no recording: each token stands for itself (`<id>`), its runner-up the next id."""
        steps = tuple(
            (
                t,
                f"<{t}>",
                0.75,
                (TopToken(id=t, text=f"<{t}>", prob=0.75), TopToken(id=t + 1, text=f"<{t + 1}>", prob=0.25)),
            )
            for t in request.reply
        )
        self.emit(ReplyScored(turn_id=request.turn_id, steps=steps))

    def _replay(self, request):
        """The next recorded turn, as the request's turn: after a fork's forced start, its index counts on from it."""
        self._cancel.clear()
        events = self.turns[self.played % len(self.turns)]
        self.played += 1
        turn_id, start = request.turn_id, len(request.reply_prefix)
        kept = self._fork_start(request.reply_prefix)
        text = "".join(piece for _, piece, _ in kept)
        generated = []
        for event in events:
            if hasattr(event, "turn_id"):
                event = dataclasses.replace(event, turn_id=turn_id)
            if hasattr(event, "index"):
                event = dataclasses.replace(event, index=event.index + start)
            if isinstance(event, TurnStarted):
                event = dataclasses.replace(event, prefix_text=text)
            if isinstance(event, InsideStep):
                # As the engine does: only what the open views ask for.
                event = self._watched(event)
                if event is None:
                    continue
            if isinstance(event, TokenGenerated):
                if event.index - start == self.gate_at:
                    self.turn_gate.wait(30)
                if self._cancel.is_set():
                    stats = dataclasses.replace(
                        events[-1].stats, stop_reason="cancelled", generated_tokens=len(generated)
                    )
                    self.emit(self._ended(request, events[-1], generated, text, stats))
                    return
                if not event.thinking:  # as the engine's text: the answer alone
                    text += event.text
                generated.append(event)
                time.sleep(self.delay)
            if isinstance(event, TurnEnded):
                event = self._ended(request, event, generated, text, event.stats)
                self.replies.append(kept + [(e.token_id, e.text, e.top_k) for e in generated])
            self.emit(event)

    def _fork_start(self, prefix):
        """A fork's forced start as the engine detokenizes it: the kept tokens' texts (from the reply they were
        played in), then the forced token's (from that step's top-k; `<id>` if it was not among them)."""
        if not prefix:
            return []
        kept, forced = prefix[:-1], prefix[-1]
        reply = next((r for r in self.replies if tuple(t for t, _, _ in r[: len(kept)]) == kept), [])
        at_top = reply[len(kept)][2] if len(reply) > len(kept) else ()
        piece = next((t.text for t in at_top if t.id == forced), f"<{forced}>")
        return list(reply[: len(kept)]) + [(forced, piece, at_top)]

    def _ended(self, request, recorded, generated, text, stats):
        """The turn's end as the engine reports it: the whole reply, a fork's forced start first."""
        stops = set(recorded.token_ids) - set(recorded.reply_ids)  # recorded: every id, then the reply without the stop
        whole = request.reply_prefix + tuple(s.token_id for s in generated)
        if any(s.thinking for s in generated):
            text = text.lstrip("\n")  # the blank line after </think> separates; it is not the answer
        return dataclasses.replace(
            recorded,
            turn_id=request.turn_id,
            text=text,
            token_ids=whole,
            reply_ids=tuple(t for t in whole if t not in stops),
            stats=stats,
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
