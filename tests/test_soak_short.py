"""A short soak in every test run: many turns through a small cache, in a process of its own.

README: memory is flat after the first eviction and RoPE positions never pass the
capacity. `scripts/soak.py` checks both on every reported cache state, every turn
saved, and memory; here 24 turns through a 96-token cache (it wraps about six
times). From turn 8 to turn 24, RSS must grow by under 10 MB and the memory MLX's
live arrays hold by under 1 MB (measured: 0.0 and 0.05 MB). Keeping each step's
float32 logits (196 KB, 5 a turn) adds 1 MB a turn to the arrays while RSS stays
put (MLX reuses freed buffers): the array bound catches it. The 500-turn run is
`pytest -m slow` (tests/test_soak.py).
"""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


def test_two_dozen_turns_in_a_small_cache(tmp_path):
    args = ["--turns", "24", "--max-kv-size", "96", "--max-tokens", "6", "--warmup", "8", "--rss-bound-mb", "10"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--db", str(tmp_path / "soak.db")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith("PASS")
    # 96 tokens x 46,080 bytes (30 layers x 3 KV heads x 64 x 4 bytes x K and V)
    assert "24 turns, 0 failures, 24 replies saved, cache bytes after the first eviction 4423680" in proc.stdout
