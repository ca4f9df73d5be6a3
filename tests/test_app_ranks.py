"""The app itself with `--ranks 2`, in a terminal: rank 0 runs the UI, rank 1 the follower loop.

The app runs under a pseudo-terminal on a tiny random model whose 6 query and 3 KV
heads split unevenly over 2 ranks, as the default model's do. A message typed there
must get the reply `glasschat run` gives in one process (read back from the
conversation database the app writes as it goes); Ctrl+Q ends the app and its
follower. A follower killed under the app closes it with one line and exit code 3.
"""

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from types import SimpleNamespace

import pytest
from test_app_killed import read_rows, wait_until

from model.runtime.engine_core import EngineCore
from model.runtime.events import SwitchFailed
from model.runtime.settings import EngineOptions
from tests.cli_helpers import glasschat
from tests.test_tensor_parallel import UNEVEN, followers_alive
from tests.tiny_models import write_chat_folder

MESSAGE = "Hello! How are you today?"
OPTIONS = ("--weights", "float32", "--max-kv-size", "64", "--max-tokens", "12")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-uneven-app")
    write_chat_folder(folder, **UNEVEN)
    return str(folder)


class Terminal:
    """The app (`python -m chat.cli ARGS`) under a pseudo-terminal, its output read as it comes."""

    def __init__(self, tmp_path, *args):
        env = {
            **os.environ,
            "TERM": "xterm-256color",
            "XDG_CONFIG_HOME": str(tmp_path / "config"),  # no settings file of the user's is read or written
            "XDG_DATA_HOME": str(tmp_path / "data"),
        }
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(sys.executable, [sys.executable, "-m", "chat.cli", *args], env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 140, 0, 0))
        self.screen = bytearray()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):  # the app blocks if nobody reads its terminal
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.screen.extend(chunk)

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def exit_code(self, timeout=60) -> int:
        """Wait for the app to end (a bound on a hang, not a timing) and return its exit status."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        pytest.fail("the app did not end")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def follower_of(pid: int) -> int:
    [child] = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return int(child)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_app_on_two_ranks_answers_as_one_process_and_quits_clean(tiny, tmp_path):
    alone = glasschat("run", "--model", tiny, *OPTIONS, "--json", MESSAGE, timeout=120)
    assert alone.returncode == 0, alone.stderr
    want = json.loads(alone.stdout)["text"]
    db = tmp_path / "g.db"
    app = Terminal(tmp_path, "--model", tiny, *OPTIONS, "--ranks", "2", "--db", str(db))
    try:
        wait_until(lambda: b"glasschat" in app.screen, "the app to draw", timeout=120)
        assert len(followers_alive(tiny)) == 1
        app.type(MESSAGE.encode() + b"\r")  # queued until the model is ready, then sent
        wait_until(lambda: [r[0] for r in read_rows(db)] == ["user", "assistant"], "the reply to be saved", 120)
        assert read_rows(db)[1][1] == want
        app.type(b"\x11")  # Ctrl+Q
        assert app.exit_code() == 0
    finally:
        app.close()
    assert not followers_alive(tiny)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_a_follower_killed_under_the_app_closes_it_with_one_line(tiny, tmp_path):
    app = Terminal(tmp_path, "--model", tiny, *OPTIONS, "--ranks", "2", "--db", str(tmp_path / "g.db"))
    try:
        wait_until(lambda: b"glasschat" in app.screen, "the app to draw", timeout=120)
        os.kill(follower_of(app.pid), signal.SIGKILL)
        assert app.exit_code() == 3
        # Printed after the app gave the terminal back (Textual leaves the alternate screen, then prints).
        screen, left, tail = bytes(app.screen).rpartition(b"\x1b[?1049l")
        assert left, "the terminal was not given back"
        tail = tail.decode(errors="replace")
        assert "glasschat: rank 1 of 2 stopped (signal 9); the group cannot go on." in tail
        assert "start again with --ranks 2" in tail
    finally:
        app.close()
    assert not followers_alive(tiny)


def test_a_model_switch_is_refused_while_split():
    """Every rank loaded the model at start; the followers cannot load another, so the engine refuses in one line."""
    events = []
    session = EngineCore(EngineOptions(), events.append)
    session.loaded = SimpleNamespace(group=SimpleNamespace(size=2))  # a model split over 2 ranks, as far as asked
    session.switch_model("other.gguf")
    [failed] = events
    assert isinstance(failed, SwitchFailed) and failed.model == "other.gguf"
    assert failed.message == "Every rank loaded this model at start: to use another, start again with " + (
        "--model other.gguf --ranks 2."
    )
    assert session.loaded.group.size == 2  # the model in use stays
