"""Record a real conversation over 2 ranks for the Cluster view's tests: python tests/record_cluster_events.py

The default model split over 2 local ranks (this process is rank 0), one short turn
and one long enough to show several timed steps. Writes tests/data/cluster_events.json.
"""

from pathlib import Path

import event_codec
from engine_harness import SyncChat

import model  # noqa: F401
from model.cache.settings import CacheSettings
from model.distributed.group import LocalGroup
from model.runtime.events import ModelReady

OUT = Path(__file__).parent / "data" / "cluster_events.json"
USERS = ["What is the capital of France?", "Write a short story about a dragon who learns to read."]


def main() -> None:
    group = LocalGroup(2, None, "auto")
    try:
        run = SyncChat(max_tokens=48, cache=CacheSettings(max_kv_size=256), shard=group.shard)
        load = [e for e in run.events if isinstance(e, ModelReady)]
        assert load[-1].info["cluster"]["ranks"] == 2
        turns = []
        for user in USERS:
            start = len(run.events)
            run.turn(user)
            turns.append(run.events[start:])
        event_codec.save(OUT, load, turns)
        print(f"wrote {OUT} ({sum(len(t) for t in turns)} events)")
    finally:
        group.close()


if __name__ == "__main__":
    main()
