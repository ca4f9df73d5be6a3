"""Tensor parallel over 2 ranks on 127.0.0.1 gives what one process gives; a dead rank gets one line.

Every test starts its ranks through the command (`--ranks 2`: rank 0 is the
command, it starts rank 1 on ports it picks) and checks none is left running.
The tiny model has 6 query and 3 KV heads, so 2 ranks split it unevenly, as
they do the default model's 9 and 3.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from model.distributed.plan import ALIGN, split
from model.network.config import ModelConfig
from tests.cli_helpers import glasschat
from tests.tiny_models import write_chat_folder

UNEVEN = {"num_attention_heads": 6, "num_key_value_heads": 3, "hidden_size": 192, "intermediate_size": 256}
PROMPT = "The cat sat on the mat. The dog sat on the log. A bird sang in the tree. Hello! How are you today?"
COMMON = ("--weights", "float32", "--max-kv-size", "64", "--json")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-uneven")
    write_chat_folder(folder, **UNEVEN)
    return str(folder)


def followers_alive(model: str = "") -> list[str]:
    """Follower processes still running (for `model` only, when given: other runs may share the machine)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "model.distributed.follower" in line and model in line]


def same_cache_but_bytes(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if "bytes" not in k} == {k: v for k, v in b.items() if "bytes" not in k}


def test_default_model_split_is_uneven_and_balanced():
    config = ModelConfig("llama", 576, 30, 9, 3, 64, 1536, 49152)
    a, b = split(config, 2)
    assert (a.kv_heads, a.q_heads, b.kv_heads, b.q_heads) == (range(0, 2), range(0, 6), range(2, 3), range(6, 9))
    assert a.mlp.stop == b.mlp.start and b.mlp.stop == 1536 and a.mlp.start == 0
    # Per layer, q+o take 2*d*hd per query head, k+v 2*d*hd per KV head, the MLP 3*d per column.
    work = [2 * 576 * 64 * (len(s.q_heads) + len(s.kv_heads)) + 3 * 576 * len(s.mlp) for s in (a, b)]
    assert abs(work[0] - work[1]) <= 3 * 576 * ALIGN
    with pytest.raises(Exception, match="1 to 3 ranks"):
        split(config, 4)


def _run(tiny, ranks, *args):
    proc = glasschat("run", "--model", tiny, *COMMON, "--ranks", str(ranks), *args, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_two_ranks_give_the_single_process_tokens_probabilities_and_shares(tiny):
    one = _run(tiny, 1, "--max-tokens", "40", "--show-top", "5", PROMPT)
    two = _run(tiny, 2, "--max-tokens", "40", "--show-top", "5", PROMPT)
    assert one["cache"]["evicted_total"] > 0  # the reply wrapped the 64-token cache
    assert two["token_ids"] == one["token_ids"]
    assert same_cache_but_bytes(two["cache"], one["cache"])  # `cache` is rank 0's; the bytes are its share
    for step_one, step_two in zip(one["top_k"], two["top_k"], strict=True):
        assert [t[0] for t in step_two] == [t[0] for t in step_one]
        assert [t[2] for t in step_two] == pytest.approx([t[2] for t in step_one], abs=1e-5)
    assert two["model"] == one["model"]  # the full model's facts, not rank 0's share
    assert two["ranks"] == 2 and len(two["per_rank"]) == 2 and two["mode"] == "tensor"
    assert [r["heads"] for r in two["per_rank"]] == [4, 2]  # query heads follow their 2 and 1 KV heads
    assert two["messages_per_step"] == 2 * 2 and two["bytes_per_message"] == 4 * UNEVEN["hidden_size"]
    # Weights: the blocks' matrices are split, embedding (tied head) and norms are on both ranks.
    d, layers, vocab = UNEVEN["hidden_size"], 2, one["model"]["vocab_size"]
    replicated = 4 * (vocab * d + d + layers * 2 * d)
    weights = [r["weight_bytes"] for r in two["per_rank"]]
    assert sum(weights) == one["model"]["weight_bytes"] + replicated
    # KV: rank 0 holds 2 of the 3 KV heads, rank 1 the third.
    kv = [r["kv_bytes"] for r in two["per_rank"]]
    assert kv == [one["cache"]["bytes"] * 2 // 3, one["cache"]["bytes"] // 3]
    assert not followers_alive(tiny)


def test_two_ranks_match_through_a_conversation_that_wraps(tiny, tmp_path):
    messages = tmp_path / "turns.json"
    messages.write_text(json.dumps(["Hello!", "What is the weather like?", "The cat sat on the mat.", "Let me think."]))
    rows = {}
    for ranks in (1, 2):
        proc = glasschat("replay", str(messages), "--model", tiny, *COMMON, "--max-tokens", "60", "--ranks", str(ranks))
        assert proc.returncode == 0, proc.stderr
        rows[ranks] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows[1][-1]["cache"]["evicted_total"] > 0
    # A reply that ends in a stop token rolls back the token fed ahead: the followers must follow that too.
    assert "stop" in [r["stop_reason"] for r in rows[1]]
    assert [r["token_ids"] for r in rows[2]] == [r["token_ids"] for r in rows[1]]
    assert all(same_cache_but_bytes(a["cache"], b["cache"]) for a, b in zip(rows[2], rows[1], strict=True))
    assert not followers_alive(tiny)


def test_kv_bits_cache_is_sharded_too(tiny):
    one = _run(tiny, 1, "--max-tokens", "30", "--kv-bits", "8", "Hello there")
    two = _run(tiny, 2, "--max-tokens", "30", "--kv-bits", "8", "Hello there")
    assert two["token_ids"] == one["token_ids"]
    assert sum(r["kv_bytes"] for r in two["per_rank"]) == one["cache"]["bytes"]


@pytest.mark.parametrize("split", [(), ("--pipeline",)], ids=["tensor", "pipeline"])
def test_a_killed_rank_gets_one_line_and_no_hang(tiny, split):
    cmd = [sys.executable, "-m", "chat.cli", "run", "--model", tiny, "--weights", "float32", *split]
    cmd += ["--max-kv-size", "64", "--max-tokens", "100000", "--ranks", "2", "Tell me a story"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdout.read(8)  # the reply is streaming: both ranks are in decode
        follower = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(follower) == 1
        os.kill(int(follower[0]), signal.SIGKILL)
        _, err = proc.communicate(timeout=60)  # a bound on a hang, not a timing: it ends well before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in err.decode().splitlines() if not line.startswith("[ring]")]
    assert proc.returncode != 0
    assert len(lines) == 1, err.decode()
    assert lines[0].startswith("glasschat: rank 1 of 2 stopped (signal 9)")
    assert lines[0].endswith(f"start again with {' '.join(('--ranks', '2', *split))}.")
    assert not followers_alive(tiny)


def test_more_ranks_than_kv_heads_is_one_line(tiny):
    proc = glasschat("run", "--model", tiny, *COMMON, "--ranks", "4", "hi", timeout=120)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("[ring]")]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "splits over 1 to 3 ranks, not 4" in lines[0]
    assert not followers_alive(tiny)


@pytest.mark.slow  # about a minute per run on 2 busy cores: the default model, once with 1 rank and once with 2
def test_default_model_over_two_ranks_gives_the_single_process_reply():
    prompt = "Name three colours of the rainbow."
    runs = []
    for ranks in ("1", "2"):
        # float32 pinned: with the CPU's default 4-bit weights the SIMD kernel rounds each layer's input to
        # int16, so the ranks' differently ordered sums (~1e-7) can flip a code: probabilities 3e-4 apart.
        args = ("--weights", "float32", "--max-tokens", "32", "--ranks", ranks, prompt)
        proc = glasschat("run", "--json", *args, timeout=300)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    one, two = runs
    assert two["token_ids"] == one["token_ids"]
    for step_one, step_two in zip(one["top_k"], two["top_k"], strict=True):
        assert [t[0] for t in step_two] == [t[0] for t in step_one]
        assert [t[2] for t in step_two] == pytest.approx([t[2] for t in step_one], abs=1e-4)
    assert not followers_alive()


def test_ranks_on_one_machine_share_its_cores(monkeypatch, tmp_path):
    """Each local rank's OpenBLAS and kernel get its part of the cores: with a thread per core in every
    rank, the PyPI OpenBLAS's spinning threads stalled 2 ranks on 2 cores (decode 2.3 tok/s, not 27)."""
    import model.distributed.group as group
    from model import blas

    for key in group.share_of_cores(1):
        monkeypatch.setenv(key, "unset by the test")  # restored afterwards: the group sets rank 0's own
    started, asked = [], []

    class Follower:  # stands in for the follower process: only its environment is looked at
        def __init__(self, cmd, env, **_):
            started.append(env)

        def poll(self):
            return None

        def send_signal(self, _signal):
            pass

        def wait(self):
            return 0

    monkeypatch.setattr(group.subprocess, "Popen", Follower)
    monkeypatch.setattr(group.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(group.blas, "set_threads", asked.append)
    ranks = group.LocalGroup(4, None, "float32")
    ranks.close()
    assert [env["OPENBLAS_NUM_THREADS"] for env in started] == ["2", "2", "2"]  # ranks 1-3: 8 cores / 4
    assert all(env["GLASSCHAT_KERNEL_THREADS"] == env["GLASSCHAT_KERNEL_PASS_THREADS"] == "2" for env in started)
    assert asked == [2] and os.environ["GLASSCHAT_KERNEL_THREADS"] == "2"  # rank 0, this process
    # The call rank 0 makes reaches the loaded OpenBLAS (the one MLX runs on here).
    monkeypatch.undo()
    if blas.blas_info().name == "OpenBLAS":
        # What OpenBLAS started with: OPENBLAS_NUM_THREADS (a parallel test worker's share), else a thread a core.
        before = blas.set_threads(int(os.environ.get("OPENBLAS_NUM_THREADS") or os.cpu_count() or 1))
        try:
            assert blas.set_threads(1) == 1
        finally:
            blas.set_threads(before)
