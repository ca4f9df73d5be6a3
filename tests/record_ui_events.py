"""Record a real conversation's engine events for the UI tests: python tests/record_ui_events.py"""

from pathlib import Path

import event_codec
from engine_harness import SyncChat

import model  # noqa: F401
from model.cache.settings import CacheSettings
from model.internals.needs import StepNeeds
from model.runtime.events import ModelReady

OUT = Path(__file__).parent / "data" / "recorded_events.json"
USERS = ["What is the capital of France?", "Write a long story about a dragon who learns to read."]


def main() -> None:
    run = SyncChat(max_tokens=160, cache=CacheSettings(max_kv_size=160))
    # Watched steps for the attention and lens views (the fake engine drops them while those are closed).
    run.set_needs(StepNeeds(top_k=10, attention_layer=15, lens_layers=(), interval_s=1.0))
    load = [e for e in run.events if isinstance(e, ModelReady)]
    turns = []
    for user in USERS:
        start = len(run.events)
        run.turn(user)
        turns.append(run.events[start:])
    assert any(e.cache.evicted_total for e in turns[-1] if hasattr(e, "cache"))  # shows an eviction
    event_codec.save(OUT, load, turns)
    print(f"wrote {OUT} ({sum(len(t) for t in turns)} events)")


if __name__ == "__main__":
    main()
