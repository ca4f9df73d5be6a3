"""Attached files: the delimited block and reading it back, the one-line refusals, path completion, and
`run`/`replay --file` on a tiny model (the message with a file is the message the file's text was typed into)."""

import json
import os

import pytest
from cli_helpers import assert_one_line_error, glasschat
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.attachments import (
    Attachment,
    AttachmentError,
    CacheRoom,
    compose_message,
    fit_problem,
    read_attachment,
    split_message,
)
from chat.path_completion import complete_path
from chat.store import Store

names = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=20).map(str.strip)
# Made of the pieces that could end a block early: fences of every length, line breaks, a header.
texts = st.lists(
    st.sampled_from(["a", " ", "\n", "\n\n", "`", "```", "````", "File: x", "é中", "\t"]), max_size=25
).map("".join)


@settings(max_examples=400, deadline=None)
@given(
    typed=st.text(alphabet=st.sampled_from(list("ab `\n:File")), max_size=30).map(str.strip),
    files=st.lists(st.tuples(names.filter(bool), texts), max_size=3),
)
def test_a_message_gives_back_the_files_and_the_text_it_was_made_of(typed, files):
    attachments = [Attachment(name, text, 0) for name, text in files]
    typed_back, found = split_message(compose_message(typed, attachments))
    assert typed_back == typed
    # The block's own line break ends a file's text, so one trailing newline is the block's.
    assert [(a.name, a.text) for a in found] == [(n, t[:-1] if t.endswith("\n") else t) for n, t in files]


def test_the_fence_outgrows_any_backticks_in_the_file():
    inner = "Some code:\n````python\nprint('```')\n````\n"
    block = Attachment("notes.md", inner, len(inner)).block()
    assert block.splitlines()[1] == "`````" and block.endswith("\n`````")
    assert block.startswith("File: notes.md\n")


def test_what_cannot_be_attached_is_one_line_each(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"PK\x03\x04\x00\x00junk")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "bom.txt").write_bytes("\ufeffhello".encode())
    cases = {
        "a.bin": "binary file (a NUL byte at 4)",
        "latin1.txt": "not UTF-8 text (byte 0xe9 at 3)",
        "missing.txt": "No file at",
        ".": "is a folder",
    }
    for name, phrase in cases.items():
        with pytest.raises(AttachmentError) as caught:
            read_attachment(str(tmp_path / name))
        assert phrase in str(caught.value) and "\n" not in str(caught.value)
    assert read_attachment(str(tmp_path / "bom.txt")) == Attachment("bom.txt", "hello", 5)  # the mark is not text


def test_too_big_for_the_cache_says_the_numbers():
    room = CacheRoom(capacity=2048, sink=30, reply=32)
    assert fit_problem("a.txt", 1986, room, "raise it") is None
    line = fit_problem("a.txt", 1987, room, "raise it")
    assert line.startswith("a.txt is 1,987 tokens; the KV cache has room for 1,986 in a message (capacity 2,048")


def test_file_before_and_after_the_subcommand_is_both_files():
    from chat.cli import parse_args

    assert parse_args(["--file", "a.txt", "run", "hi", "--file", "b.txt"]).files == ["a.txt", "b.txt"]
    assert parse_args(["replay", "r.json"]).files == ()


def test_tab_completes_a_path_as_a_shell_does(tmp_path, monkeypatch):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "budget-2026.txt").write_text("x")
    (tmp_path / "notes" / "budget-2025.txt").write_text("x")
    (tmp_path / "novel.md").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert complete_path("not").text == "notes/"  # one match, a folder
    assert complete_path("notes/b").text == "notes/budget-202"  # as far as both agree
    assert complete_path("notes/b").matches == ["budget-2025.txt", "budget-2026.txt"]
    assert complete_path("nov").text == "novel.md" and complete_path("zzz").matches == []
    monkeypatch.setenv("HOME", str(tmp_path))
    assert complete_path("~/notes/budget-2026").text == "~/notes/budget-2026.txt"


NOTES = "Budget for the trip:\n- train tickets: 120 euros\n- hotel: 300 euros\n"


def _json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_run_with_a_file_reads_the_message_the_file_was_typed_into(tmp_path, tiny_chat_model):
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES)
    common = ("--model", tiny_chat_model, "--weights", "float32", "--max-tokens", "4", "--json")
    attached = _json(glasschat("run", "What does the hotel cost?", "--file", str(notes), *common))
    typed = compose_message("What does the hotel cost?", [Attachment("notes.txt", NOTES, len(NOTES))])
    assert typed.startswith("File: notes.txt\n```\nBudget") and typed.endswith("```\n\nWhat does the hotel cost?")
    by_hand = _json(glasschat("run", typed, *common))
    assert attached["prompt_tokens"] == by_hand["prompt_tokens"] and attached["token_ids"] == by_hand["token_ids"]
    plain = _json(glasschat("run", "What does the hotel cost?", *common))
    assert attached["prompt_tokens"] > plain["prompt_tokens"] + 20  # the file's text was read


def test_replay_with_files_saves_them_in_the_first_message(tmp_path, tiny_chat_model):
    notes, todo = tmp_path / "notes.txt", tmp_path / "todo.md"
    notes.write_text(NOTES)
    todo.write_text("1. book the hotel\n")
    script = tmp_path / "chat.json"
    script.write_text(json.dumps(["Sum the budget.", "And the hotel alone?"]))
    db = tmp_path / "g.db"
    args = ("--model", tiny_chat_model, "--weights", "float32", "--max-tokens", "3", "--json", "--db", str(db))
    proc = glasschat("replay", str(script), "--file", str(notes), "--file", str(todo), *args)
    assert proc.returncode == 0, proc.stderr
    store = Store(db)
    [conversation] = store.conversations()
    first, _, second, _ = store.messages(conversation.id)
    typed, files = split_message(first.content)
    assert typed == "Sum the budget." and [(f.name, f.text) for f in files] == [
        ("notes.txt", NOTES[:-1]),
        ("todo.md", "1. book the hotel"),
    ]
    assert second.content == "And the hotel alone?"
    assert conversation.title == "Sum the budget."  # named by what was typed, not by the file
    assert [h.message_id for h in store.search("hotel tickets")] == [first.id]  # a file's words are searchable


def test_run_refuses_a_binary_file_before_loading_and_a_file_too_big_with_the_numbers(tmp_path, tiny_chat_model):
    binary = tmp_path / "photo.jpg"
    binary.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    assert_one_line_error(glasschat("run", "hi", "--file", str(binary)), "photo.jpg is a binary file")
    big = tmp_path / "big.txt"
    big.write_text(" ".join(f"word{n}" for n in range(400)))
    proc = glasschat(
        "run", "hi", "--file", str(big), "--model", tiny_chat_model, "--max-kv-size", "128", "--weights", "float32"
    )
    assert_one_line_error(proc, "big.txt is ", "tokens; the KV cache has room for", "capacity 128", "--max-kv-size")
    assert os.path.exists(big)
