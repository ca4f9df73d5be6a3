"""An engine stand-in for UI tests: it replays a recorded real conversation's events."""

import dataclasses
import queue
import threading
import time
from pathlib import Path

import event_codec

from model.errors import ModelError
from model.internals.watch import Watch
from model.loading import hub
from model.loading.loader import resolve_source
from model.runtime.events import (
    ConversationReset,
    DownloadProgress,
    HistoryRestored,
    InsideStep,
    ModelFailed,
    ModelLoading,
    SwitchFailed,
    TokenGenerated,
    TurnEnded,
    TurnStarted,
)

RECORDING = Path(__file__).parent / "data" / "recorded_events.json"


class FakeEngine:
    """Same interface as model.runtime.engine.Engine; each `send` replays the next recorded turn."""

    def __init__(self, options, emit, delay: float = 0.0, recording: Path = RECORDING, gate_at: int = 1, download=None):
        self.options, self.emit, self.delay = options, emit, delay
        self.download = download  # stands in for snapshot_download when a switch fetches a Hub id (None: the real one)
        self.load_events, self.turns = event_codec.load(recording)
        self.sent: list[str] = []
        self.updates: list[dict] = []
        self.watch = Watch()
        self.watches: list[Watch] = []
        self._cancel = threading.Event()
        self._requests: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.turn_gate = threading.Event()  # cleared, it holds a turn before token `gate_at`
        self.turn_gate.set()
        self.gate_at = gate_at

    def start(self):
        self._thread.start()
        return self

    def send(self, text):
        self.sent.append(text)
        self._requests.put(("send", text))

    def cancel(self):
        self._cancel.set()

    def reset(self, system=None):
        self._requests.put(("reset", system))

    def restore(self, system, messages):
        self.restored = (system, list(messages))
        self._requests.put(("restore", len(messages)))

    def switch_model(self, model):
        self._requests.put(("switch", model))

    def set_sampling(self, settings):
        self.update(sampling=settings)

    def set_watch(self, watch):
        self.watch = watch
        self.watches.append(watch)

    def update(self, **changes):
        self.updates.append(changes)

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
            if kind == "reset":
                self.emit(ConversationReset(self.load_events[-1].cache, arg))
            if kind == "send":
                self._replay(arg, self.turns[(len(self.sent) - 1) % len(self.turns)])
            if kind == "switch":
                self._switch(arg)

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

    def _replay(self, user, events):
        self._cancel.clear()
        text = ""
        for event in events:
            if isinstance(event, TurnStarted):
                event = dataclasses.replace(event, user=user)
            if isinstance(event, InsideStep):
                # As the engine does: only what the open views ask for.
                event = self._watched(event)
                if event is None:
                    continue
            if isinstance(event, TokenGenerated):
                if event.index == self.gate_at:
                    self.turn_gate.wait(30)
                if self._cancel.is_set():
                    stats = dataclasses.replace(events[-1].stats, stop_reason="cancelled", generated_tokens=event.index)
                    self.emit(TurnEnded(event.turn, text, (), stats, event.cache))
                    return
                text += event.text
                time.sleep(self.delay)
            self.emit(event)

    def _watched(self, event):
        watch = self.watch
        if not watch.active:
            return None
        if watch.attention_layer is None:
            event = dataclasses.replace(event, layer=None, attention=(), attention_mean=(), most_attended=())
        if not watch.lens:
            event = dataclasses.replace(event, lens=(), lens_layers=())
        elif watch.lens_layers:  # recorded with every layer; keep those asked for
            rows = [(layer, row) for layer, row in zip(event.lens_layers, event.lens) if layer in watch.lens_layers]
            event = dataclasses.replace(event, lens=tuple(r for _, r in rows), lens_layers=tuple(l for l, _ in rows))
        return event
