"""Search of saved conversations: the FTS5 index kept in step, built once for an old database, ranked by bm25,
the matching line as the snippet, and whatever a user types never failing as query syntax."""

import json
import math
import re
import sqlite3

import pytest
from cli_helpers import assert_one_line_error, glasschat
from hypothesis import given, settings
from hypothesis import strategies as st

from chat import search_index
from chat.search_index import MARK_END, MARK_START
from chat.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError


def index_is_consistent(store: Store) -> None:
    """FTS5's own check of the index against the messages table; raises if they differ."""
    store.db.execute("INSERT INTO message_search (message_search, rank) VALUES ('integrity-check', 1)")


def old_database(path, messages: list[str]) -> None:
    """A database as glasschat wrote it before search: the schema, no index."""
    db = sqlite3.connect(path)
    for migration in MIGRATIONS:
        for statement in migration.split(";"):
            if statement.strip():
                db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute("INSERT INTO conversations (title, created, updated, model, settings) VALUES ('old', 0, 0, 'm', '{}')")
    db.executemany(
        "INSERT INTO messages (conversation_id, position, role, content, created) VALUES (1, ?, 'user', ?, 0)",
        list(enumerate(messages)),
    )
    db.commit()
    db.close()


def test_the_index_follows_every_write(tmp_path):
    store = Store(tmp_path / "g.db")
    kept = store.new_conversation("m", None, {})
    store.add_message(kept, "user", "Where do sea otters sleep?")
    store.add_reply(kept, "Sea otters sleep floating on their backs.", [1], "complete", {}, {})
    gone = store.new_conversation("m", None, {})
    store.add_message(gone, "user", "Do otters hold hands?")
    assert {h.message_id for h in store.search("otters")} == {1, 2, 3}

    store.delete(gone)  # its messages go by cascade: the delete trigger must see them
    assert {h.message_id for h in store.search("otters")} == {1, 2}
    store.db.execute("UPDATE messages SET content = 'Where do beavers sleep?' WHERE id = 1")
    assert {h.message_id for h in store.search("otters")} == {2}
    assert [h.message_id for h in store.search("beavers")] == [1]
    index_is_consistent(store)


def test_an_old_database_gets_its_index_once_with_progress(tmp_path):
    path = tmp_path / "old.db"
    old_database(path, [f"note {n} about {'lighthouses' if n % 1000 == 7 else 'weather'}" for n in range(5000)])
    heard = []
    store = Store(path, progress=lambda done, total: heard.append((done, total)))
    assert heard[-1] == (5000, 5000) and len(heard) > 1  # in batches, each reported
    assert sorted(h.message_id for h in store.search("lighthouse")) == [8, 1008, 2008, 3008, 4008]
    index_is_consistent(store)
    store.close()

    heard.clear()
    Store(path, progress=lambda done, total: heard.append((done, total))).close()
    assert heard == []  # built once


def test_a_build_killed_half_way_is_done_again_at_the_next_open(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    old_database(path, [f"message {n} of the archive" for n in range(3000)])

    def killed(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Store(path, progress=killed)
    store = Store(path)
    assert len(store.search("archive", limit=5000)) == 3000
    index_is_consistent(store)


def _bm25(query: list[str], docs: dict[int, list[str]]) -> dict[int, float]:
    """BM25 as FTS5's documentation defines it (k1 = 1.2, b = 0.75, IDF floored at 1e-6), negated as bm25() is."""
    n = len(docs)
    avgdl = sum(len(words) for words in docs.values()) / n
    scores = {}
    for doc_id, words in docs.items():
        if not all(term in words for term in query):
            continue
        score = 0.0
        for term in query:
            having = sum(term in w for w in docs.values())
            idf = max(math.log((n - having + 0.5) / (having + 0.5)), 1e-6)
            f = words.count(term)
            score += idf * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * len(words) / avgdl))
        scores[doc_id] = -score
    return scores


def test_hits_are_ranked_by_bm25_computed_by_hand(tmp_path):
    store = Store(tmp_path / "g.db")
    texts = [
        "the cat sat on the mat",
        "cat cat cat",
        "a dog and a cat and a bird and a fish in a very long sentence about pets",
        "the dog barked",
        "bird song at dawn",
        "cat",
        "fish and chips and a cat",
        "the weather is mild",
    ]
    cid = store.new_conversation("m", None, {})
    for text in texts:
        store.add_message(cid, "user", text)
    docs = {n: text.split() for n, text in enumerate(texts, start=1)}
    for query in (["cat"], ["cat", "dog"], ["bird"]):
        expected = _bm25(query, docs)
        hits = store.search(" ".join(query))
        assert [h.message_id for h in hits] == sorted(expected, key=expected.get)
        for hit in hits:
            assert hit.rank == pytest.approx(expected[hit.message_id], rel=1e-6)


def test_the_snippet_is_the_matching_line_with_the_match_marked(tmp_path):
    store = Store(tmp_path / "g.db")
    cid = store.new_conversation("m", None, {})
    store.add_message(cid, "user", "Shopping list:\n- apples\n- a jar of   marmalade for Sunday\n- bread")
    [hit] = store.search("marmalade")
    assert hit.snippet == f"…- a jar of {MARK_START}marmalade{MARK_END} for Sunday…"
    assert hit.plain() == ("…- a jar of marmalade for Sunday…", [(12, 21)])
    assert (hit.conversation_id, hit.title, hit.role) == (
        cid,
        "Shopping list: - apples - a jar of marmalade for Sunday - br…",
        "user",
    )


HOSTILE = [
    '"',
    '"unbalanced',
    "(",
    "a)",
    "NEAR",
    "NEAR(a b)",
    "a NEAR/2 b",
    "-x",
    "*",
    "a*",
    "AND",
    "OR NOT",
    "^a",
    "a:b",
    "{a b}",
    "col:x",
    "'",
]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("s") / "g.db")
    cid = store.new_conversation("m", None, {})
    store.add_message(cid, "user", 'He said "NEAR (the) end" - a:b and x* OR NOT y; {braces} ^caret')
    return store


@pytest.mark.parametrize("words", HOSTILE)
def test_query_syntax_in_what_a_user_types_is_quoted(searched, words):
    hits = searched.search(words)  # never raises
    if words in ("NEAR", "-x", "a*", "AND", "OR NOT", "a:b"):
        assert len(hits) == 1, words  # read as words, they are in the message


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab \"*()-:^{}+NEAROTD/\\'\u00e9\u4e2d\x00")), max_size=30))
def test_no_typed_text_makes_the_search_fail(searched, words):
    searched.search(words)


def test_without_fts5_the_store_works_and_search_says_why(tmp_path, monkeypatch):
    path = tmp_path / "g.db"
    Store(path).close()  # with an index and its triggers
    monkeypatch.setattr(search_index, "fts5_available", lambda db: False)
    store = Store(path)
    cid = store.new_conversation("m", None, {})
    store.add_message(cid, "user", "written where SQLite has no FTS5")  # the triggers are gone: this works
    with pytest.raises(StoreError, match="no FTS5"):
        store.search("written")
    store.close()
    monkeypatch.undo()
    assert [h.message_id for h in Store(path).search("written")] == [1]  # built again where FTS5 is


def test_a_message_on_another_branch_is_shown_on_the_newest_path_through_it(tmp_path):
    store = Store(tmp_path / "g.db")
    cid = store.new_conversation("m", None, {})
    q = store.add_message(cid, "user", "q")
    a1 = store.add_reply(cid, "first", [1], "complete", {}, {}, parent=q)
    f1 = store.add_message(cid, "user", "follow-up on first", parent=a1)
    a2 = store.add_reply(cid, "second", [2], "complete", {}, {}, parent=q)  # a regenerate: now the path shown
    assert store.path_through(cid, a2) == a2 and store.path_through(cid, q) == a2
    assert store.path_through(cid, a1) == f1  # a branch not shown: down to its newest message


def test_history_search_on_the_command_line(tmp_path):
    db = tmp_path / "g.db"
    store = Store(db)
    cid = store.new_conversation("m", None, {})
    store.add_message(cid, "user", "What is a rotating KV cache?")
    store.add_reply(cid, "It keeps the newest tokens.", [1], "complete", {}, {})
    store.close()

    out = glasschat("history", "--db", str(db), "--search", "rotating cache")
    assert out.returncode == 0, out.stderr
    first, snippet = out.stdout.splitlines()
    assert re.match(rf"\s+{cid}  message 1\s+user\s+\d{{4}}-\d\d-\d\d \d\d:\d\d  What is a rotating KV cache\?$", first)
    assert snippet.strip() == "What is a «rotating» KV «cache»?"

    out = glasschat("--json", "history", "--search", "newest", "--db", str(db))
    [row] = [json.loads(line) for line in out.stdout.splitlines()]
    assert (row["conversation"], row["message"], row["role"]) == (cid, 2, "assistant")
    assert row["snippet"][slice(*row["matches"][0])] == "newest"

    none = glasschat("history", "--db", str(db), "--search", "zebra")
    assert none.returncode == 1 and none.stdout == "" and "no saved message" in none.stderr
    assert_one_line_error(glasschat("history", "--db", str(db), "--search", "*"), "no word to look for")


def test_the_bench_database_and_its_report(tmp_path, monkeypatch):
    """`glasschat bench --history` on a small database: its counts are those a scan of the text gives (no timing)."""
    from chat import history_bench as history_search

    monkeypatch.setattr(history_search, "MESSAGES", 400)
    report = history_search.measure(tmp_path, repeats=1, log=lambda line: None)
    db = sqlite3.connect(tmp_path / "history.db")
    texts = [row[0].split() for row in db.execute("SELECT content FROM messages WHERE conversation_id <= 20")]
    by_query = {s["query"]: s for s in report["searches"]}
    rare = by_query["rare word"]
    assert rare["hits"] == min(50, sum(rare["words"] in words for words in texts))
    assert by_query["in no message"]["hits"] == 0 and by_query["common word"]["hits"] == 50
    assert report["messages"] == 400 and report["slowest_search_s"] > 0
