"""Full-text search over every saved message: an SQLite FTS5 index kept in step with the messages table.

The index is an external-content FTS5 table (`content='messages'`): it stores
only the inverted index, and reads the text back from `messages` for snippets,
so a message's text is kept once. Triggers on `messages` keep it in step with
every insert, delete (a deleted conversation's messages go by cascade) and
edit, inside the same transaction as the write.

The index is complete exactly when its triggers exist: a database from before
search, or one written by an SQLite without FTS5 (the triggers are dropped
there, since they could not run), gets its index built once at the next open,
in batches that report progress, in one transaction (killed half way, it is
built again next time).

What a user types is never read as FTS5 syntax: each word becomes a quoted
string (`"NEAR"`, `"-x"`, `"("` are words), so a query cannot fail to parse.
A trailing `*` keeps its meaning, a prefix search, since people type it so.
"""

import re
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

# Porter stemming, so "caches" finds "cache" and "running" finds "run"; unicode61
# folds case and (remove_diacritics 2) accents, so "cafe" finds "café".
CREATE_INDEX = (
    "CREATE VIRTUAL TABLE message_search USING fts5(content, content='messages', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2')"
)
TRIGGERS = {
    "message_search_insert": (
        "CREATE TRIGGER message_search_insert AFTER INSERT ON messages BEGIN "
        "INSERT INTO message_search (rowid, content) VALUES (new.id, new.content); END"
    ),
    "message_search_delete": (
        "CREATE TRIGGER message_search_delete AFTER DELETE ON messages BEGIN "
        "INSERT INTO message_search (message_search, rowid, content) VALUES ('delete', old.id, old.content); END"
    ),
    "message_search_update": (
        "CREATE TRIGGER message_search_update AFTER UPDATE OF content ON messages BEGIN "
        "INSERT INTO message_search (message_search, rowid, content) VALUES ('delete', old.id, old.content); "
        "INSERT INTO message_search (rowid, content) VALUES (new.id, new.content); END"
    ),
}
BATCH = 2000  # messages indexed between progress reports (10,000 messages of chat take ~1 s in all)
MARK_START, MARK_END = "\x02", "\x03"  # around each matched word in a snippet; never in what a user types
SNIPPET_TOKENS = 24  # words of context in a snippet, around the best match

Progress = Callable[[int, int], None]  # (messages indexed so far, messages in all)


@dataclass(frozen=True)
class SearchHit:
    """One message that matches, best first."""

    message_id: int
    conversation_id: int
    title: str  # the conversation's
    role: str  # "user" or "assistant"
    created: float  # when the message was written
    snippet: str  # the matching line, each match between MARK_START and MARK_END
    rank: float  # bm25: lower is better

    def parts(self) -> list[tuple[str, bool]]:
        """The snippet as (text, matched) pieces, for drawing the matches in bold."""
        pieces = re.split(f"({MARK_START}.*?{MARK_END})", self.snippet)
        return [(p.strip(MARK_START + MARK_END), p.startswith(MARK_START)) for p in pieces if p]

    def plain(self) -> tuple[str, list[tuple[int, int]]]:
        """The snippet without marks, and where each match is in it (start, end characters)."""
        text, spans = "", []
        for piece, matched in self.parts():
            if matched:
                spans.append((len(text), len(text) + len(piece)))
            text += piece
        return text, spans


def fts5_available(db: sqlite3.Connection) -> bool:
    """Some SQLite builds leave FTS5 out: there the store works, without search."""
    try:
        db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts5_probe USING fts5(x)")
        db.execute("DROP TABLE temp.fts5_probe")
        return True
    except sqlite3.OperationalError:
        return False


def _triggers(db: sqlite3.Connection) -> set[str]:
    rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'message_search_%'")
    return {name for (name,) in rows}


def ensure_index(db: sqlite3.Connection, transaction, progress: Optional[Progress] = None) -> bool:
    """Build the index if this database has none (or an incomplete one); False where SQLite has no FTS5.

    `transaction()` is the store's write transaction; `progress` hears about each batch."""
    if not fts5_available(db):
        if _triggers(db):  # they name a module this SQLite lacks: every write would fail
            with transaction():
                for name in TRIGGERS:
                    db.execute(f"DROP TRIGGER IF EXISTS {name}")
        return False
    if _triggers(db) == set(TRIGGERS):
        return True
    with transaction():
        if _triggers(db) == set(TRIGGERS):  # another process built it while this one waited for the lock
            return True
        for name in TRIGGERS:
            db.execute(f"DROP TRIGGER IF EXISTS {name}")
        db.execute("DROP TABLE IF EXISTS message_search")
        db.execute(CREATE_INDEX)
        _fill(db, progress)
        for statement in TRIGGERS.values():
            db.execute(statement)
    return True


def _fill(db: sqlite3.Connection, progress: Optional[Progress]) -> None:
    total = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    done, last = 0, -1
    while done < total:
        rows = db.execute("SELECT id, content FROM messages WHERE id > ? ORDER BY id LIMIT ?", (last, BATCH)).fetchall()
        if not rows:
            break
        db.executemany("INSERT INTO message_search (rowid, content) VALUES (?, ?)", rows)
        done, last = done + len(rows), rows[-1][0]
        if progress is not None:
            progress(done, total)


def match_expression(words: str) -> Optional[str]:
    """What the user typed as an FTS5 query that always parses: every word quoted, all of them required.

    None when nothing in it could match (no letter or digit)."""
    terms = []
    # FTS5 reads its query as a C string: a NUL would end it inside a quote. No control character is a word.
    words = "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in words)
    for word in words.split():
        core = word.rstrip("*")
        if not any(ch.isalnum() for ch in core):
            continue  # punctuation alone is never indexed; quoted, it would be an empty phrase
        quoted = '"' + core.replace('"', '""') + '"'
        terms.append(quoted + ("*" if word.endswith("*") else ""))
    return " ".join(terms) or None


def search(db: sqlite3.Connection, words: str, limit: int = 50) -> list[SearchHit]:
    """Messages of every saved conversation that hold all of `words`, best first (bm25)."""
    expression = match_expression(words)
    if expression is None:
        return []
    rows = db.execute(
        "SELECT m.id, m.conversation_id, c.title, m.role, m.created, "
        f"snippet(message_search, 0, '{MARK_START}', '{MARK_END}', '…', {SNIPPET_TOKENS}), rank "
        "FROM message_search JOIN messages m ON m.id = message_search.rowid "
        "JOIN conversations c ON c.id = m.conversation_id "
        "WHERE message_search MATCH ? ORDER BY rank LIMIT ?",
        (expression, limit),
    ).fetchall()
    return [SearchHit(*row[:5], _matching_line(row[5]), row[6]) for row in rows]


def _matching_line(snippet: str) -> str:
    """The line of the snippet that holds the first match (a snippet may span lines of the message)."""
    lines = snippet.split("\n")
    at = next((n for n, line in enumerate(lines) if MARK_START in line), 0)
    line = " ".join(lines[at].split())
    return ("…" if at > 0 else "") + line + ("…" if at < len(lines) - 1 else "")


def print_progress(done: int, total: int) -> None:
    """Progress on stderr, on one line that is written over (the app's terminal before it starts)."""
    end = "\n" if done >= total else ""
    print(f"\rglasschat: indexing saved messages for search: {done:,} of {total:,}", end=end, file=sys.stderr)
