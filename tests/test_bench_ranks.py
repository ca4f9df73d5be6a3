"""`glasschat bench --ranks N`: the 70B estimate's arithmetic, and the section itself on a tiny model."""

import json

import pytest

from bench.ranks import BigModel, estimate
from tests.cli_helpers import glasschat
from tests.test_pipeline import THREE_BLOCKS
from tests.test_tensor_parallel import followers_alive
from tests.tiny_models import write_chat_folder


def test_the_estimate_is_the_arithmetic_the_readme_shows():
    # One block, weights read in 50 ms, 1 GB/s, 10 us a hop, a 16 KB message.
    model = BigModel(layers=1, hidden=8192, weight_bytes=40e9, memory_bytes_s=800e9, message_bytes=16384)
    two = estimate(10e-6, 2, 1e9, model)
    # Tensor: 25 ms of weights each; 2 all_sums of 2 hops, each 10 us + 8192 B / 1 GB/s.
    assert two["tensor"]["compute_s"] == pytest.approx(0.025)
    assert two["tensor"]["comm_s"] == pytest.approx(2 * 2 * (10e-6 + 8.192e-6))
    # Pipeline: 50 ms of weights, one stage after the other; 2 hops of the whole 16 KB.
    assert two["pipeline"]["compute_s"] == pytest.approx(0.05)
    assert two["pipeline"]["comm_s"] == pytest.approx(2 * (10e-6 + 16.384e-6))
    four = estimate(10e-6, 4, 1e9, model)
    assert four["tensor"]["comm_s"] == pytest.approx(2 * 6 * (10e-6 + 4.096e-6))  # 2(N-1) hops of a quarter each
    assert four["tensor"]["tok_s"] == pytest.approx(1 / (0.0125 + 2 * 6 * (10e-6 + 4.096e-6)))


@pytest.mark.slow  # three settings in three processes, with their groups: about 20 s on 2 busy cores
def test_bench_ranks_reports_each_setting_with_the_same_tokens(tmp_path):
    write_chat_folder(tmp_path, **THREE_BLOCKS)
    proc = glasschat("bench", "--ranks", "2", "--json", "--model", str(tmp_path), "--decode-tokens", "8", timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rows = report["settings"]
    assert [(r["ranks"], r["mode"]) for r in rows] == [(1, "single"), (2, "tensor"), (2, "pipeline")]
    assert all(r["same_tokens"] for r in rows)
    for r in rows[1:]:
        assert len(r["per_rank"]) == 2 and r["comm_s_per_step"] > 0 and r["all_sum_latency_s"] > 0
    assert {e["ranks"] for e in report["estimate_70b"]} == {2, 4}
    assert not followers_alive(str(tmp_path))
