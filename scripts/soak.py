"""Soak: N turns through one conversation with a small cache, saved to a database.

    python scripts/soak.py [--turns 500] [--max-kv-size 512] [--max-tokens 16] [--rss-bound-mb 50] [--mlx-bound-mb 1]

Fails (exit 1, the reasons printed) unless, over the whole run:
- every turn is answered and saved to the database;
- the cache evicted, and from the first eviction on its bytes never change and
  equal the bytes a full cache takes (the README: "memory is flat");
- the RoPE position never reaches the capacity;
- from the warm-up turn to the end (allocators settle in the first turns; a
  leak keeps growing after), process RSS grows by less than its bound, and the
  memory MLX's live arrays hold (`mx.get_active_memory()`) by less than its own:
  MLX reuses freed buffers, so RSS alone can miss arrays that are kept.
`make test` runs it short (tests/test_soak_short.py); `pytest -m slow` at scale.
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import model  # noqa: E402,F401  (before mlx: it gives MLX its BLAS, see model.blas)

# isort: split
import mlx.core as mx  # noqa: E402

from chat.recorder import ConversationRecorder  # noqa: E402
from chat.store import Store  # noqa: E402
from model.cache.settings import CacheSettings  # noqa: E402
from model.runtime.headless import HeadlessSession  # noqa: E402
from model.runtime.settings import EngineOptions  # noqa: E402

TOPICS = ["the sea", "a cat", "bread", "the moon", "rain", "a train", "music", "snow", "a garden", "chess", "tea"]


def rss_mb() -> float:
    """Resident memory now (Linux), or the peak so far where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class Watcher:
    """Checks every cache state a turn reports."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.flat_bytes = None  # the cache's bytes at its first eviction
        self.problems: list[str] = []
        self.max_position = 0

    def saw(self, n: int, state) -> None:
        self.max_position = max(self.max_position, state.position)
        if state.position >= self.capacity:
            self.problems.append(f"turn {n}: RoPE position {state.position} reached the capacity {self.capacity}")
        if self.flat_bytes is None and state.evicted_total > 0:
            self.flat_bytes = state.bytes
            if state.bytes != state.bytes_full:
                self.problems.append(f"turn {n}: {state.bytes} bytes at the first eviction, not {state.bytes_full}")
        elif self.flat_bytes is not None and state.bytes != self.flat_bytes:
            self.problems.append(f"turn {n}: cache bytes moved from {self.flat_bytes} to {state.bytes}")


def soak(
    turns: int, max_kv_size: int, max_tokens: int, db: Path, rss_bound_mb: float, mlx_bound_mb: float, warmup: int
) -> list[str]:
    """Run the soak; returns what went wrong (empty when it passed)."""
    store = Store(db)
    recorder = ConversationRecorder(store, "default", {})  # saves as `glasschat replay --db` does, turn by turn
    options = EngineOptions(max_tokens=max_tokens, cache=CacheSettings(max_kv_size=max_kv_size))
    session = HeadlessSession(options, saver=recorder)
    watcher, rss, arrays, failures, start = Watcher(max_kv_size), {}, {}, [], time.time()
    try:
        for n in range(1, turns + 1):
            user = f"Turn {n}: tell me one fact about {TOPICS[n % len(TOPICS)]}."
            result = session.turn(user)
            if result.failed or not result.ended.text.strip():
                failures.append(f"turn {n} failed: {result.failed.message if result.failed else 'empty reply'}")
                continue
            for event in result.tokens:
                watcher.saw(n, event.cache)
            watcher.saw(n, result.ended.cache)
            rss[n], arrays[n] = rss_mb(), mx.get_active_memory() / 2**20
            if n % 50 == 0 or n in (1, warmup, turns):
                c = result.ended.cache
                print(
                    f"turn {n:4d}  rss {rss[n]:7.1f} MB  mlx arrays {arrays[n]:7.1f} MB  cache {c.tokens}/{c.capacity} "
                    f"({c.bytes / 2**20:.1f} MB)  evicted {c.evicted_total}  pos {c.position}  "
                    f"{time.time() - start:6.0f} s",
                    flush=True,
                )
    finally:
        session.close()
    replies = sum(1 for m in store.messages(recorder.conversation_id) if m.role == "assistant")

    def growth(samples: dict) -> float:
        return (
            max(v for k, v in samples.items() if k >= warmup) - samples[warmup] if warmup in samples else float("nan")
        )

    rss_growth, mlx_growth = growth(rss), growth(arrays)
    print(
        f"{turns} turns, {len(failures)} failures, {replies} replies saved, cache bytes after the first "
        f"eviction {watcher.flat_bytes}, highest position {watcher.max_position} (capacity {max_kv_size}), "
        f"growth after turn {warmup}: RSS {rss_growth:.1f} MB (bound {rss_bound_mb:g}), "
        f"MLX arrays {mlx_growth:.2f} MB (bound {mlx_bound_mb:g})"
    )
    problems = failures + watcher.problems
    if replies != turns:
        problems.append(f"{replies} of {turns} replies saved")
    if watcher.flat_bytes is None:
        problems.append("the cache never evicted: raise --turns or lower --max-kv-size")
    if not rss_growth < rss_bound_mb:
        problems.append(f"RSS grew {rss_growth:.1f} MB after turn {warmup} (bound {rss_bound_mb:g} MB)")
    if not mlx_growth < mlx_bound_mb:
        problems.append(f"MLX arrays grew {mlx_growth:.2f} MB after turn {warmup} (bound {mlx_bound_mb:g} MB)")
    return problems


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--turns", type=int, default=500)
    p.add_argument("--max-kv-size", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--rss-bound-mb", type=float, default=50.0)
    p.add_argument("--mlx-bound-mb", type=float, default=1.0)
    p.add_argument("--warmup", type=int, help="RSS growth is measured from this turn (default: 50, or a third)")
    p.add_argument("--db")
    args = p.parse_args()
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "soak.db"
    warmup = args.warmup or min(50, max(1, args.turns // 3))
    problems = soak(args.turns, args.max_kv_size, args.max_tokens, db, args.rss_bound_mb, args.mlx_bound_mb, warmup)
    for line in problems:
        print(f"FAIL: {line}")
    print("FAIL" if problems else "PASS")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
