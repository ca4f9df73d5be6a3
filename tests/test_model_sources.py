"""The same model from a GGUF, a safetensors folder, and a Hub id in a local cache."""

import json
import os
import subprocess
import sys

import mlx.core as mx
import pytest
from gguf_export import export_folder

from model.runtime.headless import HeadlessSession
from model.runtime.settings import EngineOptions

MAX_TOKENS = 16


def greedy(model_source, users):
    session = HeadlessSession(EngineOptions(model=model_source, max_tokens=MAX_TOKENS))
    try:
        out = []
        for user in users:
            session.reset()
            out.append(list(session.turn(user).ended.token_ids))
        return out, session.ready.info
    finally:
        session.close()


@pytest.fixture(scope="module")
def mlx_folder(tmp_path_factory, default_gguf_path):
    return export_folder(default_gguf_path, tmp_path_factory.mktemp("mlx4bit") / "SmolLM2-135M-mlx-4bit")


def test_mlx_4bit_folder_gives_the_same_greedy_output(mlx_folder, golden_greedy):
    users = [c["user"] for c in golden_greedy]
    got, info = greedy(str(mlx_folder), users)
    assert info["architecture"] == "llama"
    for ids, case in zip(got, golden_greedy):
        assert ids == case["greedy_ids"][:MAX_TOKENS], case["user"]


def test_float16_folder_gives_the_same_greedy_output(tmp_path, default_gguf_path, golden_greedy):
    folder = export_folder(default_gguf_path, tmp_path / "f16", dtype=mx.float16)
    case = golden_greedy[0]
    got, _ = greedy(str(folder), [case["user"]])
    assert got[0] == case["greedy_ids"][:MAX_TOKENS]


def test_hub_id_from_a_local_cache_offline(tmp_path, mlx_folder, golden_greedy):
    # The layout huggingface_hub itself writes: refs/main names a snapshot.
    repo = tmp_path / "hub" / "models--glasschat-test--SmolLM2-135M-mlx"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in mlx_folder.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    case = golden_greedy[0]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "chat.cli",
            "run",
            case["user"],
            "--json",
            "--max-tokens",
            str(MAX_TOKENS),
            "--model",
            "glasschat-test/SmolLM2-135M-mlx",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["token_ids"] == case["greedy_ids"][:MAX_TOKENS]
    assert out["model"]["path"] == str(snapshot)

    # An id that is not cached gets one line, not a traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "chat.cli", "run", "hi", "--model", "nobody/not-cached"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "not in the local Hub cache" in proc.stderr
