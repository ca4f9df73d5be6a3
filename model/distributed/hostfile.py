"""The hostfile: which machines make the group, in the JSON `mlx.launch` reads, and how each rank is started.

    [{"ssh": "mac-a.local", "ips": ["10.0.0.1"]}, {"ssh": "mac-b.local", "ips": ["10.0.0.2"]}]

(or `{"hosts": [...]}`, as `mlx.launch` also takes). One rank per entry, in
order: the first is this machine, rank 0, which runs the app or the command.
`ssh` is how to reach the host, `ips` the addresses the ring backend connects
to (a Thunderbolt bridge's, for speed); `memory_gb`, which `mlx.launch`
ignores, sizes the host's pipeline stage. An entry whose `ssh` is 127.0.0.1 or
localhost runs here without ssh, which is what `--ranks N` is: N such entries.

A remote rank is started as `mlx.launch --backend ring` starts it: over ssh, in
this directory and with this Python (glasschat installed at the same paths on
every Mac), with MLX_RANK and a ring hostfile written on the far side. Every
mistake a user can make here is one line: a missing or malformed file, a first
host that is not this machine, a host ssh cannot reach within a few seconds.
"""

import json
import math
import os
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

from model.errors import ModelError

LOCAL = frozenset({"127.0.0.1", "localhost"})
REACH_S = 5  # how long a host may take to answer ssh before it is called unreachable
EXAMPLE = '[{"ssh": "mac-a.local", "ips": ["10.0.0.1"]}, {"ssh": "mac-b.local", "ips": ["10.0.0.2"]}]'


@dataclass(frozen=True)
class Host:
    ssh: str  # how to reach it
    ips: tuple[str, ...]  # where the ring connects to it
    memory_gb: Optional[float] = None  # for the pipeline split (glasschat's own key)

    @property
    def local(self) -> bool:
        return self.ssh in LOCAL


def local_hosts(n: int) -> list[Host]:
    """`--ranks N`: N ranks on this machine over loopback."""
    return [Host("127.0.0.1", ("127.0.0.1",))] * n


def read_hostfile(path: str) -> list[Host]:
    """The hosts in `path`, checked; any mistake is a ModelError of one line."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as exc:
        raise ModelError(f"Cannot read hostfile '{path}' ({exc.strerror}): give a JSON list such as {EXAMPLE}.")
    except UnicodeDecodeError:
        raise ModelError(f"Hostfile '{path}' is not UTF-8 text: give a JSON list such as {EXAMPLE}.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"Hostfile '{path}' is not valid JSON (line {exc.lineno}): give a list such as {EXAMPLE}.")
    except (ValueError, RecursionError):  # a number of over 4,300 digits; arrays nested ~1,000 deep
        raise ModelError(
            f"Hostfile '{path}' is too deeply nested or holds a number too long: give a list such as {EXAMPLE}."
        )
    entries = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(entries, list) or len(entries) < 2:
        raise ModelError(f"Hostfile '{path}' must list two or more hosts, one per rank, e.g. {EXAMPLE}.")
    return [_host(entry, n, path) for n, entry in enumerate(entries)]


def _host(entry, n: int, path: str) -> Host:
    where = f"Hostfile '{path}', host {n}"
    if not isinstance(entry, dict) or not isinstance(entry.get("ssh"), str) or not entry["ssh"]:
        raise ModelError(f'{where}: each host is an object with "ssh" (a name) and "ips" (a list), e.g. {EXAMPLE}.')
    named = repr(entry["ssh"]) if len(entry["ssh"]) <= 60 else repr(entry["ssh"][:57]) + "…"  # one line, short
    where = f"{where} ({named[1:-1]})"
    ips = entry.get("ips")
    if not isinstance(ips, list) or not ips or not all(isinstance(ip, str) and ip for ip in ips):
        raise ModelError(f'{where}: the ring backend needs "ips", a list of its addresses.')
    memory = entry.get("memory_gb")
    if memory is not None and (
        isinstance(memory, bool) or not isinstance(memory, (int, float)) or not 0 < memory < math.inf
    ):  # NaN and Infinity are JSON to Python; a pipeline split by them is not
        raise ModelError(f'{where}: "memory_gb" must be a positive number.')
    return Host(entry["ssh"], tuple(ips), memory)


def ring_hostfile(hosts: list[Host], ports: list[int]) -> str:
    """What MLX_HOSTFILE holds for the ring backend: per rank, each of its addresses with the rank's port."""
    return json.dumps([[f"{ip}:{port}" for ip in h.ips] for h, port in zip(hosts, ports)])


def memory_split(hosts: list[Host]) -> Optional[list[float]]:
    """Each host's memory for the pipeline split, when the hostfile gives it for every host (else even)."""
    memory = [h.memory_gb for h in hosts]
    return None if None in memory else memory


def _is_mine(ip: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


def answers(ip: str, port: int = 22, timeout: float = REACH_S) -> bool:
    """Whether something accepts a TCP connection at ip:port within `timeout` (ssh's port: Remote Login is on)."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_reachable(hosts: list[Host]) -> None:
    """Rank 0 must be this machine; every other host must answer ssh, and at its ring addresses, within
    REACH_S seconds (else the ring's own join would wait far longer before it gave up)."""
    for n, host in enumerate(hosts):
        if n > 0 and not host.local:
            continue
        for ip in host.ips:
            if not _is_mine(ip):
                who = "the first host, rank 0, is this machine" if n == 0 else f"host {n} ({host.ssh}) is this machine"
                raise ModelError(f'In the hostfile {who}, but {ip} is not one of its addresses: fix its "ips".')
    for host in hosts[1:]:
        if host.local:
            continue
        try:
            proc = subprocess.run(
                ssh_command(host, "true"), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=REACH_S + 2
            )
            said = proc.stderr.strip().splitlines()[-1] if proc.returncode and proc.stderr.strip() else ""
            failed = proc.returncode != 0
        except subprocess.TimeoutExpired:
            failed, said = True, f"no answer in {REACH_S} s"
        except OSError as exc:
            failed, said = True, f"ssh: {exc.strerror}"
        if failed:
            raise ModelError(
                f"Cannot reach host {host.ssh} over ssh ({said or 'ssh failed'}): check its name, that Remote Login "
                "is on and that `ssh` to it needs no password (a key), then start again."
            )
        for ip in host.ips:
            if not answers(ip):
                raise ModelError(
                    f"Host {host.ssh} answers ssh but not at its ring address {ip} (nothing on port 22 within "
                    f"{REACH_S} s): check the Thunderbolt Bridge or Ethernet address in the hostfile."
                )


def ssh_command(host: Host, remote: str) -> list[str]:
    """ssh that never prompts (a password prompt would hang a rank) and gives up on a silent host."""
    return ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={REACH_S}", host.ssh, remote]


def follower_command(host: Host, rank: int, ring: str, args: list[str]) -> tuple[list[str], dict]:
    """How to start `rank` on `host` (argv and environment): here as a child, or over ssh as mlx.launch does."""
    argv = [sys.executable, "-m", "model.distributed.follower", *args]
    if host.local:
        return argv, {"MLX_RANK": str(rank)}
    # On the far side: write the ring hostfile, then become the follower (so ssh's end is its end).
    script = (
        f"cd {shlex.quote(os.getcwd())} 2>/dev/null; f=$(mktemp) && printf %s {shlex.quote(ring)} > $f && "
        f"MLX_RANK={rank} MLX_HOSTFILE=$f exec {shlex.join(argv)}"
    )
    return ssh_command(host, script), {}
