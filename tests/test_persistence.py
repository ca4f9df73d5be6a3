"""Conversations that survive: replay into a database, SIGKILL mid-reply, reopen and go on."""

import json
import signal
import sqlite3
import subprocess
import sys
import time

import mlx.core as mx
import pytest
from cli_helpers import glasschat
from engine_harness import SyncChat

from chat.recorder import ConversationRecorder
from chat.store import Store
from model.runtime.generate import prefill


def test_replay_saves_every_turn(tmp_path):
    replay = tmp_path / "chat.json"
    replay.write_text(json.dumps(["Hi!", "What is 2+2?"]))
    db = tmp_path / "g.db"
    proc = glasschat("replay", str(replay), "--db", str(db), "--max-tokens", "12", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    store = Store(db)
    [c] = store.conversations()
    msgs = store.messages(c.id)
    assert [m.role for m in msgs] == ["user", "assistant"] * 2
    assert [m.content for m in msgs[1::2]] == [r["text"] for r in rows]
    assert msgs[3].stats["prompt_tokens"] == rows[1]["prompt_tokens"]
    listing = glasschat("history", "--db", str(db))
    assert "2 messages" not in listing.stdout and "4 messages" in listing.stdout
    exported = glasschat("export", str(c.id), "--db", str(db))
    assert exported.returncode == 0 and "## User\n\nWhat is 2+2?" in exported.stdout


def test_sigkill_mid_reply_loses_no_completed_turn(tmp_path):
    replay = tmp_path / "chat.json"
    users = ["Say hi.", "Name a colour.", "Write a very long story about a lighthouse keeper and the sea."] * 3
    replay.write_text(json.dumps(users))
    db = tmp_path / "g.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat.cli", "replay", str(replay), "--db", str(db), "--max-tokens", "400", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Kill during the long third reply: two replies are saved and a third user message is.
        deadline = time.time() + 240
        while time.time() < deadline:
            time.sleep(0.5)
            if db.exists():
                with sqlite3.connect(db, timeout=5) as peek:
                    try:
                        roles = [r[0] for r in peek.execute("SELECT role FROM messages ORDER BY position")]
                    except sqlite3.OperationalError:
                        continue
                if roles[-1:] == ["user"] and roles.count("assistant") >= 2:
                    time.sleep(2.0)  # well into the reply
                    break
        else:
            pytest.fail("replay never reached its third reply")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    completed = [json.loads(line) for line in proc.stdout.read().decode().splitlines()]

    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = Store(db)
    [c] = store.conversations()
    msgs = store.messages(c.id)
    replies = [m for m in msgs if m.role == "assistant"]
    assert [r.content for r in replies] == [row["text"] for row in completed]
    assert all(r.status == "complete" and r.stats for r in replies)
    assert [m.content for m in msgs if m.role == "user"] == users[: len(replies) + 1]
    assert msgs[-1].role == "user"  # the interrupted reply is absent, never half-written

    # Reopening that conversation goes on from there.
    run = SyncChat(max_tokens=8)
    recorder = ConversationRecorder(store, "default", {})
    saved = recorder.open(c.id)
    run.restore(saved.system, saved.turns, saved.current)
    _, _, ended = run.turn("Are you still there?")
    assert ended.text.strip()


def test_restored_cache_matches_the_live_one():
    # float32 pinned: with the CPU's default 4-bit weights, decode steps round their inputs to int16
    # (the SIMD kernel) while a prefill runs a float GEMM, ~5e-3 apart in logits; this checks the cache.
    live = SyncChat(max_tokens=16, layout="float32")
    live.turn("What is the capital of France?")
    live.turn("And of Spain?")
    restored = SyncChat(max_tokens=16, layout="float32")
    tree = live.conversation.tree
    restored.restore(None, list(tree.turns.values()), tree.current)
    outcomes = []
    for run in (live, restored):
        history = list(run.service.history)
        move = run.service.move(run.conversation.follow("And of Italy?").ids, run.conversation.sink)
        outcomes.append((history[: move.reused] + move.to_feed, prefill(run.model, run.cache, move.to_feed)))
    (live_ids, live_logits), (restored_ids, restored_logits) = outcomes
    assert live_ids == restored_ids  # the same token history either way
    assert mx.abs(live_logits - restored_logits).max().item() < 1e-3
