"""The app itself, in a terminal, killed with SIGKILL in the middle of a reply.

README ("Conversations"): "If the process is killed mid-reply, every completed
turn is there and the partial reply is absent." The app runs on the real model
under a pseudo-terminal, a user types two messages, and the process is killed
while the second reply is being written: the database must hold the first
exchange and the second message, no second reply, and pass SQLite's integrity check.
The same holds on a tree: killed while a reply forked at a token is written, every
branch before it is kept and the conversation reopens with all of them.
"""

import fcntl
import os
import pty
import signal
import sqlite3
import struct
import sys
import termios
import threading
import time
from contextlib import contextmanager

import pytest
from engine_harness import SyncChat

from chat.recorder import ConversationRecorder
from chat.store import Store
from model.loading.chat_template import Message, encode_conversation
from model.runtime.events import CacheHeld

FIRST, SECOND = "Say hi.", "Write a very long story about a lighthouse keeper and the sea."
# What a terminal sends for these keys (no kitty keyboard protocol under this pty).
KEYS = {
    "esc": b"\x1b",
    "f9": b"\x1b[20~",
    "shift+tab": b"\x1b[Z",
    "right": b"\x1b[C",
    "ctrl+r": b"\x12",
    "enter": b"\r",
}


def read_rows(db):
    """(role, content, status) of every message saved so far, or [] while the database is busy."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as peek:
            return peek.execute("SELECT role, content, status FROM messages ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []


def wait_until(condition, what, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


@contextmanager
def app_in_a_terminal(tmp_path, *args):
    """The app as `glasschat` starts it, under a 140x45 pseudo-terminal: yields (pid, fd, screen bytes)."""
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # no settings file of the user's is read or written
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    pid, fd = pty.fork()
    if pid == 0:  # the child: the app
        os.execvpe(sys.executable, [sys.executable, "-m", "chat.cli", *args], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 140, 0, 0))
    screen = bytearray()

    def drain():  # the app blocks if nobody reads its terminal
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    threading.Thread(target=drain, daemon=True).start()
    try:
        wait_until(lambda: b"glasschat" in screen, "the app to draw")
        yield pid, fd, screen
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def kill(pid):
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def assert_intact(db):
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_app_killed_mid_reply_keeps_completed_turns(tmp_path):
    db = tmp_path / "g.db"
    with app_in_a_terminal(tmp_path, "--db", str(db), "--max-tokens", "400") as (pid, fd, _):
        time.sleep(1.0)
        os.write(fd, FIRST.encode() + b"\r")  # sent as soon as the model is ready
        wait_until(lambda: [r[0] for r in read_rows(db)] == ["user", "assistant"], "the first reply to be saved")
        os.write(fd, SECOND.encode() + b"\r")
        wait_until(lambda: ("user", SECOND) in [r[:2] for r in read_rows(db)], "the second message to be saved")
        time.sleep(3.0)  # well into a reply of up to 400 tokens
        assert read_rows(db)[-1][:2] == ("user", SECOND), "a reply, whole or partial, was saved before the kill"
        kill(pid)

    assert_intact(db)
    store = Store(db)
    [conversation] = store.conversations()
    saved = store.messages(conversation.id)
    assert [(m.role, m.status) for m in saved] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
    ]
    assert saved[0].content == FIRST and saved[2].content == SECOND
    assert saved[1].content.strip() and saved[1].stats["generated_tokens"] > 0


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_app_killed_mid_fork_keeps_every_branch(tmp_path, tiny_chat_model):
    # A tiny random model never ends a reply by itself: Esc ends the first two, and the fork runs until the kill.
    db = tmp_path / "g.db"
    args = ("--db", str(db), "--model", tiny_chat_model, "--weights", "float32", "--max-tokens", "100000")
    with app_in_a_terminal(tmp_path, *args) as (pid, fd, _):

        def roles():
            return [r[0] for r in read_rows(db)]

        def stop_reply(saved: int, what: str) -> None:
            time.sleep(1.5)  # it streams a while; Esc stops it and it is saved, marked
            os.write(fd, KEYS["esc"])
            wait_until(lambda: len(roles()) == saved, what)

        os.write(fd, FIRST.encode() + b"\r")
        wait_until(lambda: roles() == ["user"], "the message to be saved")
        stop_reply(2, "the first reply to be saved")
        os.write(fd, KEYS["ctrl+r"])
        wait_until(lambda: len(roles()) == 3, "the regenerate's message to be saved")
        stop_reply(4, "the regenerated reply to be saved")
        # Confidence colouring, Shift+Tab onto the reply, → to its second token, Enter: forked to the runner-up.
        for key in ("f9", "shift+tab", "right", "right", "enter"):
            os.write(fd, KEYS[key])
            time.sleep(0.3)
        wait_until(lambda: len(roles()) == 5, "the fork's message to be saved")
        time.sleep(1.5)  # well into the forked reply
        assert roles() == ["user", "assistant", "user", "assistant", "user"], (
            "the forked reply was saved before the kill"
        )
        kill(pid)

    assert_intact(db)
    store = Store(db)
    [conversation] = store.conversations()
    saved = store.messages(conversation.id)
    assert [(m.role, m.status, m.parent_id) for m in saved] == [
        ("user", "complete", None),
        ("assistant", "cancelled", saved[0].id),
        ("user", "complete", None),  # the regenerate: the same message again, beside the first
        ("assistant", "cancelled", saved[2].id),
        ("user", "complete", None),  # the fork's turn; its partial reply is absent
    ]
    assert saved[1].token_ids and saved[3].token_ids and saved[1].stats["generated_tokens"] > 0
    # It reopens with both branches, on the fork's path, and either branch can be shown again.
    chat = ConversationRecorder(store, "tiny", {}).open(conversation.id)
    assert [(t.parent, t.reply_ids) for t in chat.turns] == [
        (0, tuple(saved[1].token_ids)),
        (0, tuple(saved[3].token_ids)),
        (0, ()),
    ]
    assert chat.current == 3 and {t.turn_id for t in chat.turns if t.cancelled} == {1, 2}
    run = SyncChat(model=tiny_chat_model, layout="float32", max_tokens=4)
    run.restore(chat.system, chat.turns, chat.current)
    run.switch_branch(1)
    assert isinstance(run.events[-1], CacheHeld) and run.conversation.tree.path() == [1]
    loaded, first = run.loaded, chat.turns[0]
    path = [Message("user", FIRST), Message("assistant", first.reply_text, first.reply_ids)]
    assert run.service.history == encode_conversation(loaded.template, loaded.tokenizer, path, False)[0]
