"""`--hostfile`: mlx.launch's JSON, checked in one line per mistake; local entries run as `--ranks` does.

ssh to this machine is not available in the test environment, so the remote path is
checked by running the very script ssh would run, with bash, here.
"""

import json
import socket
import subprocess
import sys

import pytest

from model.distributed.hostfile import Host, answers, follower_command, read_hostfile, ring_hostfile
from model.errors import ModelError
from tests.cli_helpers import assert_one_line_error, glasschat
from tests.test_pipeline import THREE_BLOCKS
from tests.test_tensor_parallel import followers_alive
from tests.tiny_models import write_chat_folder

HERE = {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-hostfile")
    write_chat_folder(folder, **THREE_BLOCKS)
    return str(folder)


def _file(tmp_path, content) -> str:
    path = tmp_path / "hosts.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@pytest.mark.parametrize(
    "content, phrase",
    [
        ('[{"ssh": "a", ', "is not valid JSON (line 1)"),
        ([HERE], "two or more hosts"),
        ({"hosts": "mac-a"}, "two or more hosts"),
        ([HERE, "mac-b"], 'host 1: each host is an object with "ssh"'),
        ([HERE, {"ssh": "mac-b"}], 'host 1 (mac-b): the ring backend needs "ips"'),
        ([HERE, {"ssh": "mac-b", "ips": ["10.0.0.2"], "memory_gb": "lots"}], '"memory_gb" must be a positive number'),
    ],
)
def test_a_malformed_hostfile_is_named_with_what_is_wrong(tmp_path, content, phrase):
    with pytest.raises(ModelError, match="Hostfile '.*'") as caught:
        read_hostfile(_file(tmp_path, content))
    assert phrase in str(caught.value) and "\n" not in str(caught.value)


def test_both_forms_mlx_launch_reads_are_taken(tmp_path):
    mac_b = {"ssh": "mac-b.local", "ips": ["10.0.0.2", "10.0.1.2"], "memory_gb": 64}
    for content in ([HERE, mac_b], {"backend": "ring", "hosts": [HERE, mac_b]}):
        hosts = read_hostfile(_file(tmp_path, content))
        assert hosts == [Host("127.0.0.1", ("127.0.0.1",)), Host("mac-b.local", ("10.0.0.2", "10.0.1.2"), 64)]
    # The ring backend's hostfile: per rank, each address with the rank's port (as mlx.launch writes it).
    assert json.loads(ring_hostfile(hosts, [5000, 5001])) == [["127.0.0.1:5000"], ["10.0.0.2:5001", "10.0.1.2:5001"]]


@pytest.mark.parametrize(
    "content, phrase",
    [
        (None, "Cannot read hostfile"),
        ([{"ssh": "mac-a", "ips": ["192.0.2.7"]}, HERE], "192.0.2.7 is not one of its addresses"),
        ([HERE, {"ssh": "mac-b.invalid", "ips": ["192.0.2.8"]}], "Cannot reach host mac-b.invalid over ssh"),
        # A local rank at an address that is not this machine's: MLX's ring would retry binding it for ~45 s.
        ([HERE, {"ssh": "localhost", "ips": ["192.0.2.9"]}], "host 1 (localhost) is this machine, but 192.0.2.9"),
    ],
)
def test_the_command_says_one_line_for_a_bad_or_unreachable_hostfile(tiny, tmp_path, content, phrase):
    path = str(tmp_path / "missing.json") if content is None else _file(tmp_path, content)
    # 30 s bounds a hang (the ssh check gives up after 5): not a timing.
    assert_one_line_error(glasschat("run", "--model", tiny, "--hostfile", path, "hi", timeout=30), phrase)


def test_a_hostfile_naming_this_machine_twice_runs_as_a_group(tiny, tmp_path):
    """Pipeline stages follow memory_gb: 1 to 3 puts one of the three blocks on rank 0 (an even split, two)."""
    hosts = _file(tmp_path, [{**HERE, "memory_gb": 1}, {"ssh": "localhost", "ips": ["127.0.0.1"], "memory_gb": 3}])
    common = ("--model", tiny, "--weights", "float32", "--max-kv-size", "64", "--json", "--max-tokens", "30")
    prompt = "The cat sat on the mat. The dog sat on the log. Hello! How are you today?"
    one = glasschat("run", *common, prompt, timeout=120)
    two = glasschat("run", *common, "--hostfile", hosts, "--pipeline", prompt, timeout=120)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    one, two = json.loads(one.stdout), json.loads(two.stdout)
    assert two["token_ids"] == one["token_ids"]
    assert [(r["host"], r["layers"]) for r in two["per_rank"]] == [("127.0.0.1", [0, 1]), ("localhost", [1, 3])]
    assert not followers_alive(tiny)


def test_a_remote_rank_is_started_over_ssh_with_its_rank_and_ring(tmp_path, monkeypatch):
    # A stand-in for Python on the far side: it shows what it was started with.
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "rank=$MLX_RANK dir=$(pwd) args=$*"\ncat "$MLX_HOSTFILE"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    monkeypatch.chdir(tmp_path)
    ring = ring_hostfile([Host("127.0.0.1", ("127.0.0.1",)), Host("mac-b", ("10.0.0.2",))], [5000, 5001])
    argv, env = follower_command(Host("mac-b", ("10.0.0.2",)), 1, ring, ["--model", "it's here", "--pipeline"])
    assert argv[:-1] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "mac-b"] and env == {}
    out = subprocess.run(["bash", "-c", argv[-1]], capture_output=True, text=True, timeout=30).stdout.splitlines()
    assert out[0] == f"rank=1 dir={tmp_path} args=-m model.distributed.follower --model it's here --pipeline"
    assert json.loads(out[1]) == json.loads(ring)


def test_a_ring_address_is_checked_by_connecting_to_it():
    """A remote host that answers ssh is then asked at each ring address (ssh's port), in bounded time."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert answers("127.0.0.1", port, timeout=5)
    assert not answers("127.0.0.1", port, timeout=5)  # closed now: refused at once


@pytest.mark.parametrize("command", ["inspect", "bench"])
def test_every_command_that_splits_takes_the_hostfile(tiny, tmp_path, command):
    path = _file(tmp_path, [HERE, {"ssh": "mac-b.invalid", "ips": ["192.0.2.8"]}])
    args = ("--hostfile", path) + (("hi",) if command == "inspect" else ())
    assert_one_line_error(glasschat(command, "--model", tiny, *args, timeout=30), "Cannot reach host mac-b.invalid")
