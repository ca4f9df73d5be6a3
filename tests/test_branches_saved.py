"""Branches outside the engine: `glasschat replay` with a tree, the store's tree and its migration, exports."""

import json
import sqlite3

from cli_helpers import assert_one_line_error, glasschat

from chat.export import conversation_json, conversation_markdown
from chat.recorder import ConversationRecorder
from chat.store import MIGRATIONS, SCHEMA_VERSION, Store

TREE = [
    "What is the capital of France?",
    "And of Spain?",
    {"regenerate": 1},
    {"fork": 1, "at": 3, "token": 42},
    {"user": "And of Italy?", "from": 1},
    {"user": "Hi", "from": 0},
]


def test_replay_runs_a_tree_and_saves_it(tmp_path, tiny_chat_model):
    path, db = tmp_path / "tree.json", tmp_path / "tree.db"
    path.write_text(json.dumps(TREE))
    proc = glasschat("replay", str(path), "--json", "--model", tiny_chat_model, "--max-tokens", "6", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["turn"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["path"] for r in rows] == [[1], [1, 2], [3], [4], [1, 5], [6]]
    first, _, again, fork, edit, fresh = rows
    assert again["token_ids"] == first["token_ids"] and again["user"] == first["user"]  # greedy regenerate
    assert fork["token_ids"][:3] == first["token_ids"][:3] and fork["token_ids"][3] == 42
    assert (fork["forked_at"], fork["token_forced"], fork["prompt_tokens"]) == (3, 42, 1)
    assert "forked_at" not in first and "token_forced" not in edit
    # The edit reuses turn 1's prompt and reply; the fork, the prompt and the 3 tokens it kept.
    assert edit["reused_tokens"] > first["prompt_tokens"] and fork["reused_tokens"] == first["prompt_tokens"] + 3
    assert fresh["reused_tokens"] < first["prompt_tokens"] and fresh["user"] == "Hi"

    store = Store(db)
    [summary] = store.conversations()
    messages = store.messages(summary.id)
    assert len(messages) == 12  # every turn is a user message and its reply, even a regenerate's
    by_id = {m.id: m for m in messages}
    replies = [m for m in messages if m.role == "assistant"]
    assert [r.token_ids for r in replies] == [r["token_ids"] for r in rows]
    # Each reply's parent is its own message; each message's parent is the reply of the turn it follows.
    assert all(by_id[r.parent_id].role == "user" for r in replies)
    users = [by_id[r.parent_id] for r in replies]
    assert [u.parent_id for u in users] == [None, replies[0].id, None, None, replies[0].id, None]
    assert (replies[3].forked_at, replies[3].token_forced) == (3, 42)
    shown = store.path_to(summary.id)
    assert [m.content for m in shown] == ["Hi", replies[5].content]
    md = conversation_markdown(store, summary.id)
    assert "## User\n\nHi" in md and "Spain" not in md  # Markdown: the path shown
    tree = conversation_json(store, summary.id)
    assert len(tree["messages"]) == 12 and tree["current"] == replies[5].id  # JSON: the whole tree
    assert [m["parent_id"] for m in tree["messages"]] == [m.parent_id for m in messages]
    export = glasschat("export", str(summary.id), "--db", str(db), "--json")
    assert json.loads(export.stdout)["messages"] == json.loads(json.dumps(tree["messages"]))


def test_replay_refuses_bad_entries_before_loading(tmp_path):
    for entries, words in (
        (["hi", {"fork": 2, "at": 0, "token": 5}], "entry 2 names turn 2, which has not run yet"),
        ([{"regenerate": 1}], "entry 1 names turn 1"),
        (["hi", {"fork": 1, "at": -1, "token": 5}], '"at" must be a whole number from 0'),
        (["hi", {"user": "x", "from": True}], '"from" must be a whole number'),
        (["hi", {"redo": 1}], "must be one of"),
        ({"user": "x"}, "must hold a JSON array"),
    ):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(entries))
        assert_one_line_error(glasschat("replay", str(path)), words)


def test_an_entry_naming_a_failed_turn_gets_one_line(tmp_path, tiny_chat_model):
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(["   ", {"regenerate": 1}, {"fork": 1, "at": 0, "token": 5}, "Hello"]))
    proc = glasschat("replay", str(path), "--json", "--model", tiny_chat_model, "--max-tokens", "3")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert "turn 2: turn 1 failed" in lines[-2] and "turn 3: turn 1 failed" in lines[-1]
    [row] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert row["turn"] == 4 and row["path"] == [4]


def _version_2_database(path):
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:2]:
        db.executescript(migration)
    db.execute("INSERT INTO conversations (title, created, updated, model, settings) VALUES ('old', 0, 0, 'm', '{}')")
    rows = [("user", "What is 2+2?", None), ("assistant", "4", "[19]"), ("user", "And 3+3?", None)]
    rows.append(("assistant", "6", "[20]"))
    for position, (role, content, ids) in enumerate(rows):
        db.execute(
            "INSERT INTO messages (conversation_id, position, role, content, token_ids, created) VALUES (1, ?, ?, ?, ?, 0)",
            (position, role, content, ids),
        )
    db.execute("INSERT INTO turn_stats (message_id, stats, cache) VALUES (4, '{\"decode_tok_s\": 9.0}', '{}')")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()


def test_a_version_2_database_becomes_one_path(tmp_path):
    path = tmp_path / "old.db"
    _version_2_database(path)
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    messages = store.messages(1)
    assert [m.parent_id for m in messages] == [None, 1, 2, 3]
    assert store.current_message(1) == 4 and store.path_to(1) == messages
    assert "## Assistant\n\n6" in conversation_markdown(store, 1) and messages[3].stats == {"decode_tok_s": 9.0}
    saved = ConversationRecorder(store, "m", {}).open(1)
    assert [(t.user, t.reply_text, t.parent) for t in saved.turns] == [("What is 2+2?", "4", 0), ("And 3+3?", "6", 1)]
    assert saved.turns[1].reply_ids == (20,) and saved.current == 2
    # A message added after the migration follows the path as before.
    store.add_message(1, "user", "And 4+4?")
    assert store.messages(1)[-1].parent_id == 4


def test_a_tree_round_trips_and_the_path_shown_is_kept(tmp_path):
    store = Store(tmp_path / "t.db")
    cid = store.new_conversation("m", None, {})
    u1 = store.add_message(cid, "user", "Hi", parent=None)
    r1 = store.add_reply(cid, "Hello", [1], "complete", {}, {}, parent=u1)
    u2 = store.add_message(cid, "user", "Hi", parent=None)  # a regenerate: the same message again, beside it
    r2 = store.add_reply(cid, "Hey", [2], "complete", {}, {}, parent=u2, fork=(0, 2))
    u3 = store.add_message(cid, "user", "Bye", parent=r1)
    store.show(cid, r2)
    again = Store(tmp_path / "t.db")
    assert [m.id for m in again.path_to(cid)] == [u2, r2]
    assert [m.id for m in again.path_to(cid, u3)] == [u1, r1, u3]
    assert (again.messages(cid)[3].forked_at, again.messages(cid)[3].token_forced) == (0, 2)
    again.delete(cid)
    assert not again.db.execute("SELECT * FROM messages").fetchall()
