"""The bench's llama.cpp peer runs in a child process: a SIGILL there falls back to plain buffers, never ends the bench.

llama-cpp-python is not installed in CI (a source build of ~8 minutes), so the child is
a stand-in script that speaks the real protocol and dies as llama.cpp does; where
llama-cpp-python is installed, the real child is run on the default model too.
"""

import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.llama_peer import EXTRA, PLAIN, LlamaCppEngine, PeerFailed, llama_cpp_available
from bench.run import measure_llama_cpp

FAKE = str(Path(__file__).with_name("fake_llama_peer.py"))


def fake(mode: str) -> list[str]:
    return [sys.executable, FAKE, mode]


def test_a_peer_that_dies_loading_repacked_weights_is_measured_with_plain_buffers():
    peer = LlamaCppEngine("model.gguf", 2, command=fake("load"))
    try:
        assert peer.time_to_first_token([1, 2, 3]) == 2.0  # the plain child answered
        assert peer.plain and PLAIN in peer.buffers and "died with SIGILL" in peer.buffers
    finally:
        peer.close()


def test_a_peer_that_dies_mid_run_is_restarted_and_the_request_retried():
    peer = LlamaCppEngine("model.gguf", 2, command=fake("eval"))
    try:
        assert not peer.plain
        assert peer.decode_times([1], 3) == pytest.approx([0.0, 0.1, 0.2])  # answered by the repacked child
        assert peer.time_to_first_token([1, 2, 3]) == 2.0  # it died on this one; the plain child answered
        assert peer.plain and "1 measurements before that used repacked ones" in peer.buffers
    finally:
        peer.close()


def test_a_healthy_peer_keeps_llama_cpps_default_buffers():
    peer = LlamaCppEngine("model.gguf", 2, command=fake("never"))
    try:
        assert peer.time_to_first_token([1]) == 1.0 and peer.buffers == EXTRA
    finally:
        peer.close()


def test_the_bench_survives_a_peer_that_dies_with_plain_buffers_too():
    args = SimpleNamespace(decode_tokens=4, repeats=1, budget=60.0, contexts="", context_tokens=4)
    tokenizer = SimpleNamespace(encode_text=lambda text: list(range(40)))
    result, line = measure_llama_cpp("model.gguf", tokenizer, [16], args, lambda _: None, command=fake("always"))
    assert result is None
    assert line.startswith("not measured: llama.cpp died with SIGILL"), line
    # And where it recovers, the figures say which buffers they came from.
    result, line = measure_llama_cpp("model.gguf", tokenizer, [16], args, lambda _: None, command=fake("load"))
    assert result.prefill_tok_s == {16: 8.0} and PLAIN in result.note and PLAIN in line


def test_the_real_child_runs_llama_cpp_or_says_it_is_missing():
    from model.loading.default_model import default_model_path

    path = str(default_model_path())
    if not llama_cpp_available():
        with pytest.raises(PeerFailed, match="llama.cpp did not load: No module named 'llama_cpp'"):
            LlamaCppEngine(path, 2)
        return
    peer = LlamaCppEngine(path, 2)
    try:
        assert peer.time_to_first_token([1, 2, 3, 4]) > 0 and len(peer.decode_times([1, 2], 3)) == 3
    finally:
        peer.close()


def test_sigill_is_what_the_stand_in_dies_of():
    """The stand-in's death is a real signal, seen by the parent as such (not an exit status)."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([*fake("load"), "model.gguf", "2"], capture_output=True, timeout=60, env=env)
    assert proc.returncode == -signal.SIGILL
