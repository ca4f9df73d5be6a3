"""The long soak, as a marked test: `pytest -m slow` (make test skips it; see scripts/soak.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


@pytest.mark.slow
def test_soak_500_turns(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--turns", "500", "--db", str(tmp_path / "soak.db")],
        capture_output=True,
        text=True,
        timeout=7200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
