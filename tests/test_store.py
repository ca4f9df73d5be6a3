"""The conversation store: schema and migrations, WAL, and databases that are locked or not ours."""

import sqlite3

import pytest
from cli_helpers import assert_one_line_error, glasschat

from chat.export import conversation_markdown
from chat.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError


def test_round_trip_and_wal(tmp_path):
    store = Store(tmp_path / "g.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    cid = store.new_conversation("m", "Be brief.", {"temp": 0})
    store.add_message(cid, "user", "What is 2+2?")
    store.add_reply(cid, "4", [19, 2], "complete", {"decode_tok_s": 9.5}, {"tokens": 40})
    store.add_message(cid, "user", "And 3+3?")
    store.add_reply(cid, "6", [20], "cancelled", {"decode_tok_s": 9.1}, {"tokens": 50})
    again = Store(tmp_path / "g.db")
    [summary] = again.conversations()
    assert summary.title == "What is 2+2?" and summary.messages == 4
    msgs = again.messages(cid)
    assert [m.role for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[1].token_ids == [19, 2] and msgs[1].stats == {"decode_tok_s": 9.5}
    assert msgs[3].status == "cancelled"
    md = conversation_markdown(again, cid)
    assert md.startswith('---\ntitle: "What is 2+2?"') and '"decode_tok_s": 9.5' in md
    assert "## Assistant (stopped)\n\n6" in md
    again.rename(cid, "Sums")
    assert again.conversations()[0].title == "Sums"
    again.delete(cid)
    assert again.conversations() == [] and not again.db.execute("SELECT * FROM messages").fetchall()


def test_migrates_a_version_1_database(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO conversations (title, created, updated, model, settings) VALUES ('old', 0, 0, 'm', '{}')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.conversations()[0].title == "old"
    store.add_reply(1, "hi", [1], "complete", {}, {})  # turn_stats exists now


def test_corrupt_database_is_reported_and_left_alone(tmp_path):
    path = tmp_path / "junk.db"
    junk = b"this is not sqlite " * 300
    path.write_bytes(junk)
    with pytest.raises(StoreError, match="corrupt or not a glasschat database"):
        Store(path)
    assert path.read_bytes() == junk


def test_locked_database_is_reported(tmp_path):
    path = tmp_path / "busy.db"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store = Store(path)
        with pytest.raises(StoreError, match="locked by another program"):
            store.new_conversation("m", None, {})
    finally:
        holder.execute("ROLLBACK")


def test_cli_reports_a_corrupt_database(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"\x00garbage" * 1000)
    replay = tmp_path / "r.json"
    replay.write_text('["hi"]')
    assert_one_line_error(glasschat("replay", str(replay), "--db", str(path)), "corrupt")
    assert path.read_bytes() == b"\x00garbage" * 1000
