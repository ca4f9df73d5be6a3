"""Run the glasschat command in a subprocess, as a user would."""

import subprocess
import sys


def glasschat(*args, timeout=300, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "chat.cli", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def assert_one_line_error(proc, *phrases):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
