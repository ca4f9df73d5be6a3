"""Soak: N turns through one conversation with a small cache, saved to a database.

    python scripts/soak.py [--turns 500] [--max-kv-size 512] [--max-tokens 16]

Prints process RSS every 50 turns and fails (exit 1) if RSS grows by 50 MB or
more after turn 50, if any turn fails, or if a turn is missing from the database.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import model  # noqa: E402,F401
from chat.headless import HeadlessSession  # noqa: E402
from chat.recorder import ConversationRecorder  # noqa: E402
from chat.store import Store  # noqa: E402
from model.runtime.engine import EngineOptions  # noqa: E402
from model.runtime.settings import CacheSettings  # noqa: E402

TOPICS = ["the sea", "a cat", "bread", "the moon", "rain", "a train", "music", "snow", "a garden", "chess", "tea"]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--turns", type=int, default=500)
    p.add_argument("--max-kv-size", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--db")
    args = p.parse_args()
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "soak.db"
    store = Store(db)
    recorder = ConversationRecorder(store, "default", {})
    session = HeadlessSession(
        EngineOptions(max_tokens=args.max_tokens, cache=CacheSettings(max_kv_size=args.max_kv_size))
    )
    samples, failures, start = {}, 0, time.time()
    try:
        for n in range(1, args.turns + 1):
            user = f"Turn {n}: tell me one fact about {TOPICS[n % len(TOPICS)]}."
            recorder.user_sent(user)
            result = session.turn(user)
            if result.failed or not result.ended.text.strip():
                failures += 1
                print(f"turn {n} failed: {result.failed.message if result.failed else 'empty reply'}")
                continue
            recorder.reply_ended(result.ended, list(result.ended.reply_ids))
            if n % 50 == 0 or n == 1:
                samples[n] = rss_mb()
                c = result.ended.cache
                print(
                    f"turn {n:4d}  rss {samples[n]:7.1f} MB  cache {c.tokens}/{c.capacity} "
                    f"({c.bytes / 2**20:.1f} MB)  evicted {c.evicted_total}  pos {c.position}  "
                    f"{time.time() - start:6.0f} s",
                    flush=True,
                )
    finally:
        session.close()
    saved = store.messages(recorder.conversation_id)
    replies = sum(1 for m in saved if m.role == "assistant")
    later = [v for k, v in samples.items() if k >= 50] or [samples[max(samples)]]
    growth = max(later) - samples.get(50, later[0])
    print(
        f"{args.turns} turns, {failures} failures, {replies} replies saved, RSS growth after turn 50: {growth:.1f} MB"
    )
    ok = failures == 0 and replies == args.turns and growth < 50
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
