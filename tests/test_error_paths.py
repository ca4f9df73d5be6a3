"""Every error a user can cause: one clear line, no traceback, and nothing lost.

One test per path in the list the README's promises imply: files that are not
what they claim (GGUF metadata, chat template, safetensors, replay files), options
out of range (--max-kv-size, --kv-bits, --layer, RoPE scaling), and databases
(newer schema, failing mid-session). "Nothing lost": the user's files and
database are left exactly as they were, and a chat goes on. The app killed with
SIGKILL mid-reply is in test_app_killed.py.
"""

import sqlite3

import mlx.core as mx
import pytest
from cli_helpers import assert_one_line_error, glasschat
from tiny_models import write_chat_folder
from ui_helpers import asked, fake_app, wait_for

from chat.recorder import ConversationRecorder
from chat.store import Store
from chat.widgets.transcript import AssistantMessage, Notice, UserMessage


def unchanged(path):
    """Check later that `path` (file or folder) is byte for byte what it is now."""
    files = sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    before = {p: p.read_bytes() for p in files}
    return lambda: {p: p.read_bytes() for p in files} == before


@pytest.fixture
def chat_folder(tmp_path):
    folder = tmp_path / "tiny"
    write_chat_folder(folder)
    return folder


# --- model files ------------------------------------------------------------------


def test_gguf_without_a_required_metadata_key(tmp_path):
    path = tmp_path / "incomplete.gguf"
    mx.save_gguf(str(path), {"token_embd.weight": mx.zeros((8, 4))}, {"general.architecture": "llama"})
    same = unchanged(path)
    proc = glasschat("run", "hi", "--model", str(path))
    assert_one_line_error(proc, "lacks 'llama.attention.head_count'", "re-download")
    assert same()


def test_chat_template_that_does_not_parse(tmp_path):
    folder = tmp_path / "bad-template"
    write_chat_folder(folder, template="{% for message in messages %}{{ message.content }")
    same = unchanged(folder)
    assert_one_line_error(glasschat("run", "hi", "--model", str(folder)), "chat template does not parse")
    assert same()


def test_truncated_safetensors(chat_folder):
    weights = chat_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    same = unchanged(chat_folder)
    assert_one_line_error(glasschat("run", "hi", "--model", str(chat_folder)), "truncated or corrupt", "re-download")
    assert same()


def test_missing_safetensors(chat_folder):
    (chat_folder / "model.safetensors").unlink()
    assert_one_line_error(glasschat("run", "hi", "--model", str(chat_folder)), "no model*.safetensors")


def test_unsupported_rope_scaling(tmp_path):
    folder = tmp_path / "yarn"
    write_chat_folder(folder, rope_scaling={"rope_type": "yarn", "factor": 4.0})
    assert_one_line_error(glasschat("run", "hi", "--model", str(folder)), "Unsupported RoPE scaling 'yarn'")


# --- options out of range -----------------------------------------------------------


def test_max_kv_size_below_the_minimum(chat_folder):
    proc = glasschat("run", "hi", "--model", str(chat_folder), "--max-kv-size", "16")
    assert_one_line_error(proc, "--max-kv-size 16 is too small", "at least 64")


def test_kv_bits_with_a_head_size_the_group_does_not_divide(tmp_path):
    folder = tmp_path / "head16"
    write_chat_folder(folder)  # hidden 64 over 4 heads: head size 16, a group is 32
    proc = glasschat("run", "hi", "--model", str(folder), "--kv-bits", "8")
    assert_one_line_error(proc, "--kv-bits needs a head size divisible by 32", "16")


def test_inspect_layer_out_of_range(chat_folder):
    assert_one_line_error(glasschat("inspect", "hi", "--model", str(chat_folder), "--layer", "2"), "--layer must be")


# --- replay files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, phrase",
    [
        ('["Hi", "What is 2+2?"', "is not valid JSON"),
        ('{"messages": ["Hi"]}', "JSON array"),
        (b"\xff\xfe\x00[", "not valid UTF-8"),
    ],
    ids=["not JSON", "not an array", "not UTF-8"],
)
def test_replay_file_that_is_not_a_list_of_messages(tmp_path, content, phrase):
    replay = tmp_path / "chat.json"
    replay.write_bytes(content if isinstance(content, bytes) else content.encode())
    same = unchanged(replay)
    db = tmp_path / "g.db"
    assert_one_line_error(glasschat("replay", str(replay), "--db", str(db)), phrase)
    assert same() and not db.exists()  # refused before anything was written


@pytest.mark.parametrize("kind", ["missing", "a folder"])
def test_replay_file_that_cannot_be_read(tmp_path, kind):
    replay = tmp_path / "chat.json"
    if kind == "a folder":
        replay.mkdir()
    assert_one_line_error(glasschat("replay", str(replay)), "Cannot read", str(replay))


# --- databases ---------------------------------------------------------------------------


def test_database_from_a_newer_glasschat(tmp_path):
    path = tmp_path / "future.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.execute("INSERT INTO notes VALUES ('written by glasschat 9')")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    same = unchanged(path)
    assert_one_line_error(glasschat("history", "--db", str(path)), "newer glasschat (schema 99)", "upgrade")
    assert same()


@pytest.mark.asyncio
async def test_database_failing_mid_session_the_chat_runs_unsaved(tmp_path):
    """The first exchange is saved; then the database is locked by another program: one notice, the chat
    goes on, every message stays on screen, and what was saved before stays saved."""
    path = tmp_path / "g.db"
    app, holder = fake_app(recorder=ConversationRecorder(Store(path), "fake", {}))
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)

        async def send(text):
            replies = len(app.query(AssistantMessage))
            app.query_one("#prompt").insert(text)
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(app.query(AssistantMessage)) > replies and not app.chat.busy)

        await send("First question.")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another program holds the database from now on
        try:
            await send("Second question.")
            await send("Third question.")
            await pilot.pause(0.2)
        finally:
            other.execute("ROLLBACK")
            other.close()
        notices = [str(n.render()) for n in app.query(Notice)]
        problems = [n for n in notices if "will not be saved" in n]
        assert len(problems) == 1 and "locked" in problems[0]
        assert [m.text for m in app.query(UserMessage)] == ["First question.", "Second question.", "Third question."]
        assert all(m.text for m in app.query(AssistantMessage)) and len(app.query(AssistantMessage)) == 3
        assert app.chat.busy is False and asked(app)[-1] == "Third question."
    store = Store(path)
    [conversation] = store.conversations()
    saved = store.messages(conversation.id)
    assert [m.role for m in saved] == ["user", "assistant"] and saved[0].content == "First question."
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
