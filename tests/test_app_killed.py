"""The app itself, in a terminal, killed with SIGKILL in the middle of a reply.

README ("Conversations"): "If the process is killed mid-reply, every completed
turn is there and the partial reply is absent." The app runs on the real model
under a pseudo-terminal, a user types two messages, and the process is killed
while the second reply is being written: the database must hold the first
exchange and the second message, no second reply, and pass SQLite's integrity check.
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

import pytest

from chat.store import Store

FIRST, SECOND = "Say hi.", "Write a very long story about a lighthouse keeper and the sea."


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


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_app_killed_mid_reply_keeps_completed_turns(tmp_path):
    db = tmp_path / "g.db"
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # no settings file of the user's is read or written
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    pid, fd = pty.fork()
    if pid == 0:  # the child: the app, as `glasschat` starts it
        os.execvpe(sys.executable, [sys.executable, "-m", "chat.cli", "--db", str(db), "--max-tokens", "400"], env)
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
        time.sleep(1.0)
        os.write(fd, FIRST.encode() + b"\r")  # sent as soon as the model is ready
        wait_until(lambda: [r[0] for r in read_rows(db)] == ["user", "assistant"], "the first reply to be saved")
        os.write(fd, SECOND.encode() + b"\r")
        wait_until(lambda: ("user", SECOND) in [r[:2] for r in read_rows(db)], "the second message to be saved")
        time.sleep(3.0)  # well into a reply of up to 400 tokens
        assert read_rows(db)[-1][:2] == ("user", SECOND), "a reply, whole or partial, was saved before the kill"
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)

    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
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
