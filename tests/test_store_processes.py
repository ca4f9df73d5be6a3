"""Two glasschat processes on one database (two terminals): no turn lost, never "database is locked"."""

import sqlite3
import subprocess
import sys
import threading
import time

from chat.store import MIGRATIONS, SCHEMA_VERSION, Store

TURNS = 200
WRITER = """
import os, sys, time
from chat.store import Store
db, go, name, turns = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
while not os.path.exists(go):
    time.sleep(0.001)
store = Store(db)  # both open a file that does not exist yet, at the same moment
conversation = store.new_conversation("tiny", None, {}, title=name)
for i in range(turns):
    store.add_message(conversation, "user", f"{name} asks {i}")
    store.add_reply(conversation, f"{name} answers {i}", [i, i + 1], "complete", {"turn": i}, {"held": i})
"""


def test_two_processes_write_two_hundred_turns_each_and_none_is_lost(tmp_path):
    db, go = tmp_path / "chat.db", tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(go), name, str(TURNS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("left", "right")
    ]
    time.sleep(0.5)  # both started and waiting
    go.touch()
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err[-2000:]
        assert "locked" not in err
    store = Store(db)
    conversations = {c.title: c for c in store.conversations()}
    assert set(conversations) == {"left", "right"}
    for name, conversation in conversations.items():
        path = store.path_to(conversation.id)
        assert [m.content for m in path] == [
            text for i in range(TURNS) for text in (f"{name} asks {i}", f"{name} answers {i}")
        ]
        assert [m.stats for m in path if m.role == "assistant"] == [{"turn": i} for i in range(TURNS)]


def test_a_write_waits_for_another_process_transaction_instead_of_failing(tmp_path):
    """Another connection (as another process's) holds the write lock for 3 s, longer than the 2 s the
    store used to wait (a slow disk, a long migration): the write waits, then succeeds."""
    db = tmp_path / "chat.db"
    store = Store(db)
    conversation = store.new_conversation("tiny", None, {})
    other = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(3.0, lambda: other.execute("COMMIT")).start()
    start = time.monotonic()
    store.add_message(conversation, "user", "written once the other is done")
    assert time.monotonic() - start >= 2.5
    assert [m.content for m in store.messages(conversation)] == ["written once the other is done"]


def test_two_processes_opening_a_new_file_create_the_schema_once(tmp_path):
    """The other creates the schema while this one has already read version 0: it must not create it again."""
    db = tmp_path / "chat.db"
    other = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA journal_mode = WAL")
    other.execute("BEGIN IMMEDIATE")
    for migration in MIGRATIONS:
        for statement in migration.split(";"):
            if statement.strip():
                other.execute(statement)
    other.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
    store = Store(db)  # reads version 0 (the other has not committed), then waits for the write lock
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.conversations() == []


def test_switching_to_wal_waits_for_another_process_write_lock(tmp_path):
    """SQLite answers `journal_mode = WAL` "database is locked" at once, without the busy timeout, while
    another connection holds the write lock of a file not yet in WAL (2 of 30 pairs of processes opening
    a new file together failed so): the store retries until the lock is free."""
    db = tmp_path / "chat.db"
    other = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE elsewhere (a)")
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
    start = time.monotonic()
    store = Store(db)
    assert time.monotonic() - start >= 0.4
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conversations() == []
