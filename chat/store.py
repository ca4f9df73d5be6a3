"""Saved conversations in SQLite: messages, settings, and each turn's numbers.

One file (WAL mode, so a reader never blocks the writer and a crash loses at
most the transaction in flight). Each user message is committed when sent,
each reply when it ends; a stopped reply is kept and marked. A database that
is locked or is not ours is reported and never overwritten.

Two glasschat processes (two terminals) share the file: a writer waits for the
other's transaction (a few milliseconds) for up to `BUSY_TIMEOUT_S` rather than
failing with "database is locked", and the schema is created or migrated inside
the write lock, so two processes opening a new file do not both create it.
"""

import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import search_index
from .attachments import split_message
from .search_index import Progress, SearchHit

SCHEMA_VERSION = 3
# How long a write waits for another process's transaction. Each holds the lock for one message or
# reply (~1 ms, 400 of them took 0.2 s from two processes at once); 10 s covers a slow or busy disk.
BUSY_TIMEOUT_S = 10.0

# Each migration takes the database from version i to i + 1.
MIGRATIONS = [
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        model TEXT NOT NULL,
        system_prompt TEXT,
        settings TEXT NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        token_ids TEXT,
        status TEXT NOT NULL DEFAULT 'complete',
        created REAL NOT NULL,
        UNIQUE (conversation_id, position)
    );
    """,
    # v2: per-turn numbers, kept beside the reply they describe.
    """
    CREATE TABLE turn_stats (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        stats TEXT NOT NULL,
        cache TEXT NOT NULL
    );
    """,
    # v3: the conversation is a tree (regenerate, edit, fork): every message knows its parent,
    # and the conversation the path it shows. A conversation saved before is one path: each
    # message's parent is the one before it.
    """
    ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE;
    ALTER TABLE messages ADD COLUMN forked_at INTEGER;
    ALTER TABLE messages ADD COLUMN token_forced INTEGER;
    ALTER TABLE conversations ADD COLUMN current_message INTEGER;
    UPDATE messages SET parent_id = (
        SELECT p.id FROM messages p
        WHERE p.conversation_id = messages.conversation_id AND p.position < messages.position
        ORDER BY p.position DESC LIMIT 1
    );
    UPDATE conversations SET current_message = (
        SELECT m.id FROM messages m WHERE m.conversation_id = conversations.id ORDER BY m.position DESC LIMIT 1
    );
    """,
]

_AFTER_LAST = object()  # a message's default parent: the conversation's newest message


class StoreError(Exception):
    """The database can't be used; the message says why and what to do."""


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: str
    content: str
    token_ids: Optional[list[int]]
    status: str  # "complete", "cancelled", "pending"
    stats: Optional[dict] = None
    cache: Optional[dict] = None
    parent_id: Optional[int] = None  # None: the first message of its branch from the system prompt
    forked_at: Optional[int] = None  # a forked reply: the token index where it left its sibling
    token_forced: Optional[int] = None


@dataclass(frozen=True)
class ConversationSummary:
    id: int
    title: str
    updated: float
    messages: int
    model: str


def default_db_path() -> Path:
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "glasschat" / "glasschat.db"


class Store:
    def __init__(self, path: Path, progress: Optional[Progress] = None):
        """`progress` hears how far the search index has got, when an existing database gets one built."""
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA foreign_keys = ON")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                # Refused before WAL is switched on, which rewrites the file's header: left untouched.
                raise StoreError(f"{self.path} was written by a newer glasschat (schema {version}); upgrade glasschat.")
            mode = self._switch_to_wal()
            self.db.execute("PRAGMA synchronous = NORMAL")
            if mode.lower() != "wal":
                raise StoreError(f"{self.path} can't use write-ahead logging ({mode}); put it on a local disk.")
            self._migrate()
            self.searchable = search_index.ensure_index(self.db, self.transaction, progress)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None

    def _switch_to_wal(self) -> str:
        """`PRAGMA journal_mode = WAL`, retried while another process holds the file: SQLite answers it
        "database is locked" at once, without waiting the busy timeout (2 of 30 pairs of processes
        opening a new file failed so)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def _explain(self, exc: Exception) -> str:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return f"The database {self.path} is locked by another program (another glasschat?); close it or pass --db."
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return (
                f"The database {self.path} is corrupt or not a glasschat database; it was left untouched: "
                "move it aside or pass --db."
            )
        return f"The database {self.path} can't be used ({text}); pass --db to use another file."

    def _migrate(self) -> None:
        while self.db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            # Statement by statement: executescript would commit half a migration.
            with self.transaction():
                # Read again under the write lock: another process may have migrated meanwhile.
                step = self.db.execute("PRAGMA user_version").fetchone()[0]
                if step >= SCHEMA_VERSION:
                    break
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {step + 1}")

    def transaction(self) -> "_Transaction":
        return _Transaction(self.db)

    def _write(self, sql: str, args=()) -> sqlite3.Cursor:
        try:
            with self.transaction():
                return self.db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None

    # --- conversations ---------------------------------------------------------

    def new_conversation(
        self, model: str, system_prompt: Optional[str], settings: dict, title: str = "New chat"
    ) -> int:
        now = time.time()
        cur = self._write(
            "INSERT INTO conversations (title, created, updated, model, system_prompt, settings) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (title, now, now, model, system_prompt, json.dumps(settings)),
        )
        return cur.lastrowid

    def conversations(self) -> list[ConversationSummary]:
        rows = self.db.execute(
            "SELECT c.id, c.title, c.updated, COUNT(m.id), c.model FROM conversations c "
            "LEFT JOIN messages m ON m.conversation_id = c.id GROUP BY c.id ORDER BY c.updated DESC"
        ).fetchall()
        return [ConversationSummary(*row) for row in rows]

    def conversation(self, conversation_id: int) -> dict:
        row = self.db.execute(
            "SELECT title, model, system_prompt, settings FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"There is no conversation {conversation_id}.")
        return {
            "id": conversation_id,
            "title": row[0],
            "model": row[1],
            "system_prompt": row[2],
            "settings": json.loads(row[3]),
        }

    def rename(self, conversation_id: int, title: str) -> None:
        self._write(
            "UPDATE conversations SET title = ?, updated = ? WHERE id = ?", (title, time.time(), conversation_id)
        )

    def delete(self, conversation_id: int) -> None:
        self._write("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # --- messages ----------------------------------------------------------------

    def _append(
        self,
        conversation_id: int,
        role: str,
        content: str,
        token_ids,
        status: str,
        parent=_AFTER_LAST,
        fork=(None, None),
    ) -> int:
        """Insert a message (after the newest one unless `parent` says where); call inside a transaction.

        `position` is the order messages were written in; the new message becomes the path shown."""
        now = time.time()
        position, last = self.db.execute(
            "SELECT COALESCE(MAX(position), -1) + 1, (SELECT id FROM messages WHERE conversation_id = ?1 "
            "ORDER BY position DESC LIMIT 1) FROM messages WHERE conversation_id = ?1",
            (conversation_id,),
        ).fetchone()
        cur = self.db.execute(
            "INSERT INTO messages (conversation_id, position, role, content, token_ids, status, created, parent_id, "
            "forked_at, token_forced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                conversation_id,
                position,
                role,
                content,
                json.dumps(token_ids) if token_ids is not None else None,
                status,
                now,
                last if parent is _AFTER_LAST else parent,
                *fork,
            ),
        )
        self.db.execute(
            "UPDATE conversations SET updated = ?, current_message = ? WHERE id = ?",
            (now, cur.lastrowid, conversation_id),
        )
        if role == "user" and position <= 1:
            # The first message names the conversation until the user renames it.
            self.db.execute(
                "UPDATE conversations SET title = ? WHERE id = ? AND title = 'New chat'",
                (_title_from(content), conversation_id),
            )
        return cur.lastrowid

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        token_ids: Optional[list[int]] = None,
        status: str = "complete",
        parent=_AFTER_LAST,
    ) -> int:
        """`parent`: the message this one follows (None: the system prompt); by default the newest one."""
        try:
            with self.transaction():
                return self._append(conversation_id, role, content, token_ids, status, parent)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None

    def add_reply(
        self,
        conversation_id: int,
        content: str,
        token_ids: list[int],
        status: str,
        stats: dict,
        cache: dict,
        parent=_AFTER_LAST,
        fork: tuple[Optional[int], Optional[int]] = (None, None),
    ) -> int:
        """The reply and its turn's numbers, in one transaction: both or neither. `fork`: (forked_at, token_forced)."""
        try:
            with self.transaction():
                message_id = self._append(conversation_id, "assistant", content, token_ids, status, parent, fork)
                self.db.execute(
                    "INSERT INTO turn_stats (message_id, stats, cache) VALUES (?, ?, ?)",
                    (message_id, json.dumps(stats), json.dumps(cache)),
                )
                return message_id
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        """Every message of the tree, in the order they were written."""
        rows = self.db.execute(
            "SELECT m.id, m.role, m.content, m.token_ids, m.status, t.stats, t.cache, m.parent_id, m.forked_at, "
            "m.token_forced FROM messages m LEFT JOIN turn_stats t ON t.message_id = m.id "
            "WHERE m.conversation_id = ? ORDER BY m.position",
            (conversation_id,),
        ).fetchall()
        return [
            StoredMessage(
                r[0],
                r[1],
                r[2],
                json.loads(r[3]) if r[3] else None,
                r[4],
                json.loads(r[5]) if r[5] else None,
                json.loads(r[6]) if r[6] else None,
                *r[7:],
            )
            for r in rows
        ]

    def current_message(self, conversation_id: int) -> Optional[int]:
        """The last message of the path shown (the newest message, unless a branch was chosen since)."""
        row = self.db.execute("SELECT current_message FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        return row[0] if row else None

    def show(self, conversation_id: int, message_id: Optional[int]) -> None:
        """Make the path ending at `message_id` the one shown."""
        self._write("UPDATE conversations SET current_message = ? WHERE id = ?", (message_id, conversation_id))

    def path_to(self, conversation_id: int, leaf: Optional[int] = None) -> list[StoredMessage]:
        """The messages from the root to `leaf` (the path shown by default), oldest first."""
        by_id = {m.id: m for m in self.messages(conversation_id)}
        leaf = self.current_message(conversation_id) if leaf is None else leaf
        out = []
        while leaf is not None and leaf in by_id:
            out.append(by_id[leaf])
            leaf = by_id[leaf].parent_id
        return out[::-1]

    def search(self, words: str, limit: int = 50) -> list[SearchHit]:
        """Messages of every conversation that hold all of `words` (as typed: never read as query syntax), best first."""
        if not self.searchable:
            raise StoreError("This Python's SQLite has no FTS5, so saved conversations cannot be searched.")
        try:
            return search_index.search(self.db, words, limit)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None

    def path_through(self, conversation_id: int, message_id: int) -> Optional[int]:
        """The last message of a path that shows `message_id`: the path shown if it has it, else the newest
        branch below it (what ←/→ would land on)."""
        if any(m.id == message_id for m in self.path_to(conversation_id)):
            return self.current_message(conversation_id)
        children: dict[Optional[int], list[int]] = {}
        for m in self.messages(conversation_id):  # in the order written: the last child is the newest
            children.setdefault(m.parent_id, []).append(m.id)
        leaf = message_id
        while children.get(leaf):
            leaf = children[leaf][-1]
        return leaf

    def user_messages(self, exclude_conversation: Optional[int] = None, limit: int = 500) -> list[str]:
        """What the user typed, newest first, outside one conversation (↑ in the prompt box)."""
        try:
            rows = self.db.execute(
                "SELECT content FROM messages WHERE role = 'user' AND conversation_id IS NOT ? "
                "ORDER BY created DESC, id DESC LIMIT ?",
                (exclude_conversation, limit),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None
        return [row[0] for row in rows]

    def close(self) -> None:
        self.db.close()


def _title_from(text: str) -> str:
    typed, files = split_message(text)  # what was typed names it, not the text of a file attached before it
    line = " ".join((typed or ", ".join(f.name for f in files)).split())
    return line[:60] + ("…" if len(line) > 60 else "")


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False
