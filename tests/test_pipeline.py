"""Pipeline parallel (`--pipeline`) gives the tokens tensor parallel and one process give, stage by stage.

Every run starts its ranks through the command (rank 0 is the command, it starts
the others on loopback ports it picks) and each test checks none is left. The
tiny model has 3 blocks, so 3 ranks each run one; its 64-token cache wraps
during the conversation, so eviction and K-shift happen on every stage.
"""

import json
import subprocess
import sys

import pytest

from model.distributed.plan import stages
from tests.cli_helpers import assert_one_line_error, glasschat
from tests.test_tensor_parallel import UNEVEN, followers_alive, same_cache_but_bytes
from tests.tiny_models import write_chat_folder

THREE_BLOCKS = {**UNEVEN, "num_hidden_layers": 3}
COMMON = ("--weights", "float32", "--max-kv-size", "64", "--json")
TURNS = ["Hello!", "What is the weather like?", "The cat sat on the mat.", "Let me think."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-three-blocks")
    write_chat_folder(folder, **THREE_BLOCKS)
    return str(folder)


def test_stages_are_contiguous_and_follow_memory():
    assert stages(30, 2) == [range(0, 15), range(15, 30)]
    assert stages(30, 3, [64, 32, 32]) == [range(0, 15), range(15, 22), range(22, 30)]
    # A host with little memory still runs one block, and every block is run by someone.
    assert stages(4, 3, [100, 1, 1]) == [range(0, 2), range(2, 3), range(3, 4)]
    with pytest.raises(Exception, match="1 to 3 ranks, not 4"):
        stages(3, 4)


def _replay(tiny, messages, *args):
    proc = glasschat("replay", str(messages), "--model", tiny, *COMMON, "--max-tokens", "60", *args, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_pipeline_gives_the_tensor_parallel_and_single_process_tokens(tiny, tmp_path):
    messages = tmp_path / "turns.json"
    messages.write_text(json.dumps(TURNS))
    one = _replay(tiny, messages)
    tensor = _replay(tiny, messages, "--ranks", "2")
    piped = _replay(tiny, messages, "--ranks", "3", "--pipeline")  # 2 ranks: see the next test
    assert one[-1]["cache"]["evicted_total"] > 0  # the conversation wrapped the cache
    assert "stop" in [r["stop_reason"] for r in one]  # and rolled back a token fed ahead
    for rows in (tensor, piped):
        assert [r["token_ids"] for r in rows] == [r["token_ids"] for r in one]
        assert all(same_cache_but_bytes(a["cache"], b["cache"]) for a, b in zip(rows, one, strict=True))
    last = piped[-1]
    assert last["mode"] == "pipeline" and [r["layers"] for r in last["per_rank"]] == [[0, 1], [1, 2], [2, 3]]
    # Each stage's KV cache holds its own block: a third of the single process's each.
    assert [r["kv_bytes"] for r in last["per_rank"]] == [one[-1]["cache"]["bytes"] // 3] * 3
    assert last["messages_per_step"] == 3  # one hop per stage, against tensor parallel's 2 per block
    assert not followers_alive(tiny)


def test_pipeline_weights_are_split_by_block_and_the_embedding_stays_on_rank_0(tiny):
    prompt = "The cat sat on the mat. Hello! How are you today?"
    one = glasschat("run", "--model", tiny, *COMMON, "--max-tokens", "20", "--kv-bits", "8", prompt, timeout=120)
    two = glasschat(
        "run", "--model", tiny, *COMMON, "--max-tokens", "20", "--kv-bits", "8", "--ranks", "2", "--pipeline", prompt
    )
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    one, two = json.loads(one.stdout), json.loads(two.stdout)
    assert two["token_ids"] == one["token_ids"]
    assert two["model"] == one["model"]
    # Rank 1 keeps one row of the (tied) embedding and the final norm; everything else is held once.
    d = THREE_BLOCKS["hidden_size"]
    assert sum(r["weight_bytes"] for r in two["per_rank"]) == one["model"]["weight_bytes"] + 4 * (d + d)
    assert sum(r["kv_bytes"] for r in two["per_rank"]) == one["cache"]["bytes"]
    assert not followers_alive(tiny)


def test_pipeline_needs_ranks_and_enough_blocks(tiny):
    assert_one_line_error(glasschat("run", "--model", tiny, "--pipeline", "hi"), "--ranks 2 or more")
    proc = glasschat("run", "--model", tiny, *COMMON, "--ranks", "4", "--pipeline", "hi", timeout=120)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("[ring]")]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "splits it over 1 to 3 ranks, not 4" in lines[0]
    assert not followers_alive(tiny)


@pytest.mark.slow  # the default model four times (1 process, tensor, pipeline): a few minutes on 2 busy cores
def test_default_model_pipeline_matches_through_a_wrapping_conversation(tmp_path):
    messages = tmp_path / "turns.json"
    messages.write_text(json.dumps(["Hi, who are you?", "Name three colours.", "And three animals?"]))
    rows = {}
    for name, extra in {"one": (), "tensor": ("--ranks", "2"), "pipeline": ("--ranks", "2", "--pipeline")}.items():
        args = ("--json", "--max-kv-size", "96", "--max-tokens", "24", *extra)
        proc = glasschat("replay", str(messages), *args, timeout=600)
        assert proc.returncode == 0, proc.stderr
        rows[name] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows["one"][-1]["cache"]["evicted_total"] > 0
    for name in ("tensor", "pipeline"):
        assert [r["token_ids"] for r in rows[name]] == [r["token_ids"] for r in rows["one"]]
    assert not followers_alive()


def test_inspect_over_ranks_sees_every_head_and_block(tiny):
    """Each rank records its own heads (tensor) or blocks (pipeline); rank 0 gathers the whole model's."""
    args = ("inspect", "--model", tiny, "--weights", "float32", "--json", "--layer", "2", "The cat sat on the mat.")
    runs = {}
    for name, extra in {"one": (), "tensor": ("--ranks", "3"), "pipeline": ("--ranks", "3", "--pipeline")}.items():
        proc = glasschat(*args, *extra, timeout=120)
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads(proc.stdout)
    one = runs["one"]
    for name in ("tensor", "pipeline"):
        split = runs[name]
        assert split["mode"] == name and split["top_k"][0][0] == one["top_k"][0][0]
        heads = split["attention_heads"]["weights"]  # layer 2: rank 2's block in the pipeline
        assert len(heads) == THREE_BLOCKS["num_attention_heads"]
        assert heads == [pytest.approx(row, abs=1e-5) for row in one["attention_heads"]["weights"]]
        assert split["attention"] == [pytest.approx(row, abs=1e-5) for row in one["attention"]]
        for lens_split, lens_one in zip(split["logit_lens"], one["logit_lens"], strict=True):
            assert [t[0] for t in lens_split] == [t[0] for t in lens_one]
            assert [t[2] for t in lens_split] == pytest.approx([t[2] for t in lens_one], abs=1e-5)
    assert not followers_alive(tiny)


def test_the_views_see_a_block_another_stage_holds(tiny):
    """The app's attention and lens views over a pipeline: layer 2 is rank 1's, and still shown as one process shows it."""
    runs = {}
    for name, extra in {"one": (), "pipeline": ("--ranks", "2", "--pipeline")}.items():
        cmd = [sys.executable, "-m", "tests.split_watch", "2", "--model", tiny, "--weights", "float32"]
        cmd += ["--max-tokens", "6", *extra, "Hello there"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        runs[name] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(runs["pipeline"]) == len(runs["one"]) > 0
    for split, one in zip(runs["pipeline"], runs["one"], strict=True):
        assert split["layer"] == one["layer"] == 2
        assert split["attention"] == [pytest.approx(row, abs=1e-5) for row in one["attention"]]
        assert split["lens"] == one["lens"] and len(one["lens"]) == THREE_BLOCKS["num_hidden_layers"]
    assert not followers_alive(tiny)
