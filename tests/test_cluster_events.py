"""The events a model split over ranks sends: each rank's bytes, as the ranks report them, are its share.

Ranks 2 and 3 on 127.0.0.1 against one process, on a tiny model with 6 query and 3 KV
heads: the KV cache is split by KV head (2 + 1 over 2 ranks, 1 each over 3), so each
rank's KV bytes are that fraction of the single process's; the weights are split but
for the embedding (tied to the head) and the norms, which every rank holds whole.
Every run starts its ranks itself and none is left running.
"""

import json
import subprocess
import sys
from pathlib import Path

import event_codec
import pytest

from model.runtime.events import ClusterStep, ModelReady, TokenGenerated
from tests.cli_helpers import glasschat
from tests.test_tensor_parallel import UNEVEN, followers_alive
from tests.tiny_models import write_chat_folder

ALIGN_BYTES = 3 * UNEVEN["hidden_size"] * 64 * 4  # one 64-column step of the MLP split (gate, up, down), float32
KV_HEADS = {2: [2, 1], 3: [1, 1, 1]}  # the README's rule: KV heads dealt in runs, the first ranks one more


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-uneven-events")
    write_chat_folder(folder, **UNEVEN)
    return str(folder)


def events(tiny: str, ranks: int) -> list:
    args = ["--model", tiny, "--weights", "float32", "--max-kv-size", "64", "--max-tokens", "8"]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.cluster_probe", *args, "--ranks", str(ranks), "Hello there"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [event_codec.decode(json.loads(line)) for line in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def alone(tiny):
    return events(tiny, 1)


@pytest.mark.parametrize("ranks", [2, 3])
def test_each_rank_reports_its_share_of_the_single_process_bytes(tiny, alone, ranks):
    assert not [e for e in alone if isinstance(e, ClusterStep)]  # one process: no group to report
    [ready] = [e for e in alone if isinstance(e, ModelReady)]
    weights, kv = ready.info["weight_bytes"], [e.cache.bytes for e in alone if isinstance(e, TokenGenerated)]
    split = events(tiny, ranks)
    steps = [e for e in split if isinstance(e, ClusterStep)]
    tokens = [e for e in split if isinstance(e, TokenGenerated)]
    assert [s.index for s in steps] == [t.index for t in tokens]  # one per decode step, after its token
    assert [t.token_id for t in tokens] == [e.token_id for e in alone if isinstance(e, TokenGenerated)]
    d, layers, vocab = UNEVEN["hidden_size"], 2, ready.info["vocab_size"]
    replicated = 4 * (vocab * d + d + layers * 2 * d)  # embedding (tied head), final norm, 2 norms per block
    for step, single_kv in zip(steps, kv, strict=True):
        ranks_seen = step.cluster.per_rank
        assert [r.rank for r in ranks_seen] == list(range(ranks)) and step.cluster.ranks == ranks
        # The KV cache: each rank holds its KV heads' part of the single process's.
        assert [r.kv_bytes for r in ranks_seen] == [single_kv * n // 3 for n in KV_HEADS[ranks]]
        # The weights: the replicated part on every rank, the rest 1/N each to within one MLP split step per layer.
        assert sum(r.weight_bytes for r in ranks_seen) == weights + (ranks - 1) * replicated
        for r in ranks_seen:
            assert abs((r.weight_bytes - replicated) - (weights - replicated) / ranks) <= layers * ALIGN_BYTES
    # The timed steps: the first decode step of the reply, at least; their parts add up to something.
    timed = [s.timing for s in steps if s.timing is not None]
    assert timed and all(t.comm_s > 0 and t.compute_s > 0 for t in timed)
    assert timed[0].collectives == 2 + 2 * layers  # the header and the ids, then 2 all_sums per block
    assert not followers_alive(tiny)


def test_run_json_reports_the_replys_timed_steps(tiny):
    """`run --json` on ranks: the reply's timed steps averaged (`step_timing`) beside each rank's bytes."""
    proc = glasschat(
        "run", "--model", tiny, "--weights", "float32", "--max-kv-size", "64", "--max-tokens", "8", "--json",
        "--ranks", "2", "Hello there", timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    timing = row["step_timing"]
    assert timing["timed_steps"] >= 1  # the reply's first decode step, at least
    assert timing["collectives"] == 2 + 2 * 2 and timing["comm_s"] > 0 and timing["compute_s"] > 0
    assert row["ranks"] == 2 and [r["rank"] for r in row["per_rank"]] == [0, 1]
    assert not followers_alive(tiny)
