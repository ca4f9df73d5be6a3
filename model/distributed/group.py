"""A group of ranks: ports, the ring hostfile, the follower processes, and a watchdog.

`glasschat ... --ranks N` makes one on this machine, `--hostfile FILE` one over
the hosts it lists (see `hostfile`): this process is rank 0, and it starts
ranks 1..N-1 itself as `python -m model.distributed.follower` (over ssh on
another host), with the environment `mlx.launch --backend ring` would give them
(MLX_RANK and MLX_HOSTFILE, a JSON list of each rank's "ip:port").

A rank that dies makes MLX's ring fail rank 0's next `all_sum`, but rank 0 may
be between steps, or a follower may die while loading; so a watchdog thread
polls the followers and, when one has stopped, prints one line and ends rank 0
(a wedged group cannot be resumed: every rank's cache is part of the state).
Followers watch rank 0 the same way (see `follower`).
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from model import blas
from model.distributed.gather import Place
from model.distributed.hostfile import Host, follower_command, local_hosts, memory_split, ring_hostfile
from model.distributed.info import PIPELINE, TENSOR, ClusterInfo, RankInfo, StepTiming
from model.distributed.plan import split, stages
from model.distributed.shard import shard_model

POLL_S = 0.2  # how often the watchdogs look
LINK_ROUNDS = 50  # all_sums of one value, for the latency
LINK_WIDTH = 1 << 20  # float32 values in the all_sum timed for the bandwidth (4 MB)
DEATH_WAIT_S = 5.0  # after a failed pass, how long to wait for the dead rank's process to be reaped


def free_ports(count: int) -> list[int]:
    """Ports the OS says are free now (bound and released; the ring binds them a moment later)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def init_ring(rank: int, hostfile: str):
    """Join the ring group as `rank` (what mlx.launch's environment does)."""
    import mlx.core as mx

    os.environ["MLX_RANK"] = str(rank)
    os.environ["MLX_HOSTFILE"] = hostfile
    return mx.distributed.init(backend="ring", strict=True)


def shard_loaded(loaded, group, pipeline: bool = False, memory: Optional[list[float]] = None) -> tuple[dict, Place]:
    """This rank's share of a loaded model (tensor parallel, or a pipeline stage), in place;
    returns the full model's facts, as they were before, and where the share sits in it."""
    from model.distributed.pipeline import stage_loaded

    full_info, full = loaded.info(), loaded.config
    L, H, rank = full.num_hidden_layers, full.num_attention_heads, group.rank()
    if pipeline:
        loaded.model = stage_loaded(loaded.model, group, memory)
        place = Place(loaded.model.layers, range(H), L, H, tensor=False)
    else:
        share = split(full, group.size())[rank]
        shard_model(loaded.model, share, group)
        place = Place(range(L), share.q_heads, L, H, tensor=True)
    loaded.config = loaded.model.config
    return full_info, place


def holdings(config, size: int, pipeline: bool, memory: Optional[list[float]] = None) -> list[tuple]:
    """Per rank: (the blocks it runs, [first, stop); the query heads it holds in them)."""
    if pipeline:
        return [((s.start, s.stop), config.num_attention_heads) for s in stages(config.num_hidden_layers, size, memory)]
    return [((0, config.num_hidden_layers), len(s.q_heads)) for s in split(config, size)]


def share_of_cores(ranks: int) -> dict[str, str]:
    """The environment that gives each of `ranks` processes on this machine its part of the cores.

    OpenBLAS and the kernel otherwise take a thread per core in every rank, and the PyPI
    OpenBLAS's threads spin while they wait: 2 ranks on 2 cores then ran tensor-parallel
    decode at 2.3 tok/s (rank 0 waiting ~0.5 s a step in its all_sums) instead of ~6."""
    share = str(max(1, (os.cpu_count() or 1) // ranks))
    return {
        "OPENBLAS_NUM_THREADS": share,
        "GLASSCHAT_KERNEL_THREADS": share,
        "GLASSCHAT_KERNEL_PASS_THREADS": share,
        "GLASSCHAT_ATTENTION_THREADS": share,  # the attention kernel's (model.kernels.cache_attention)
    }


class LocalGroup:
    """N ranks on this machine; this process is rank 0."""

    def __init__(
        self,
        size: int,
        model: Optional[str],
        layout: str,
        pipeline: bool = False,
        hosts: Optional[list[Host]] = None,
        again: str = "",
    ):
        """`hosts`: one per rank, this machine first (default: `size` ranks on loopback); `again`: the
        option that starts the same group, for the line that says how to restart."""
        self.hosts = hosts or local_hosts(size)
        self.size = len(self.hosts)
        self.again = (again or f"--ranks {self.size}") + (" --pipeline" if pipeline else "")
        self.pipeline = pipeline
        self.memory = memory_split(self.hosts)  # pipeline: each rank's host memory, for the split (None: even)
        self.folder = tempfile.TemporaryDirectory(prefix="glasschat-ranks-")
        self.hostfile = str(Path(self.folder.name) / "hostfile.json")
        self.ring = ring_hostfile(self.hosts, free_ports(self.size))
        Path(self.hostfile).write_text(self.ring)
        self.stopping = False
        self._ending = threading.Lock()
        # Who tells the user the group is lost: the app sets this to close itself (the terminal restored)
        # and print the line; by default it is printed to stderr and the process ends at once.
        self.on_lost: Optional[Callable[[str], None]] = None
        # Ranks on this machine share its cores: each gets its part for BLAS and the kernel (see share_of_cores).
        self.local_ranks = sum(1 for host in self.hosts if host.local)
        if self.local_ranks > 1:
            # Read by this process's kernel when it loads, and inherited by the followers started here.
            os.environ.update(share_of_cores(self.local_ranks))
            blas.set_threads(int(os.environ["OPENBLAS_NUM_THREADS"]))
        self.followers = [self._spawn(rank, model, layout) for rank in range(1, size)]
        self.leader = None
        self.full_info: dict = {}
        self.comm_s_per_step: Optional[float] = None
        self.measure_link = False  # the bench sets it: all_sum latency and bandwidth, timed once the model is sharded
        self.link: dict = {}
        self.messages_per_step = self.bytes_per_message = 0  # known once the model is sharded
        threading.Thread(target=self._watch, name="glasschat-rank-watchdog", daemon=True).start()

    def _spawn(self, rank: int, model: Optional[str], layout: str) -> subprocess.Popen:
        args = ["--weights", layout] + (["--model", model] if model else [])
        if self.pipeline:
            args += ["--pipeline"] + (["--memory", ",".join(map(str, self.memory))] if self.memory else [])
        cmd, env = follower_command(self.hosts[rank], rank, self.ring, args)
        env = {**os.environ, **env, "MLX_HOSTFILE": self.hostfile}
        log = open(Path(self.folder.name) / f"rank{rank}.log", "wb")
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def _dead(self) -> Optional[tuple[int, int]]:
        for rank, proc in enumerate(self.followers, start=1):
            code = proc.poll()
            if code is not None:
                return rank, code
        return None

    def _watch(self) -> None:
        while not self.stopping:
            dead = self._dead()
            if dead is not None and not self.stopping:
                self._end(*dead)
            time.sleep(POLL_S)

    def failed(self, exc: Exception) -> None:
        """The engine's pass failed (MLX's ring reports a lost peer): say which rank, in one line, and end.

        Called instead of the engine's usual recovery: the followers' caches are gone with them."""
        for _ in range(int(DEATH_WAIT_S / POLL_S)):
            dead = self._dead()
            if dead is not None:
                self._end(*dead)
            time.sleep(POLL_S)
        self._say(f"glasschat: the group of {self.size} ranks failed ({exc}); start again with {self.again}.")

    def _end(self, rank: int, code: int) -> None:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        said = self._last_words(rank)
        self._say(
            f"glasschat: rank {rank} of {self.size} stopped ({said or how}); the group cannot go on. "
            f"Completed turns are saved: start again with {self.again}."
        )

    def _say(self, line: str) -> None:
        with self._ending:  # the watchdog and the engine may both see the loss: one line, from whichever is first
            self._kill_followers()
            if self.on_lost is None:
                print(line, file=sys.stderr, flush=True)
                os._exit(3)
            self.on_lost(line)
            # The caller (the watchdog, or the engine thread whose pass failed) has nothing left to
            # do: it parks while the app closes, and the lock keeps the other from saying it again.
            threading.Event().wait()

    def _last_words(self, rank: int) -> str:
        """The follower's own one-line error, if it printed one (a model it could not load, a bad --ranks)."""
        try:
            lines = (Path(self.folder.name) / f"rank{rank}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        said = [line for line in lines if line.startswith("glasschat")]
        return said[-1].split(": ", 1)[-1] if said else ""

    def shard(self, loaded):
        """The engine's hook (runs on the engine thread, which owns MLX): join the ring, keep rank 0's share."""
        from model.cache.kv_factory import compute_dtype
        from model.distributed.mirror import Leader

        group = init_ring(0, self.hostfile)
        full = loaded.config
        self.holds = holdings(full, self.size, self.pipeline, self.memory)  # refuses a size that cannot split
        self.full_info, place = shard_loaded(loaded, group, self.pipeline, self.memory)
        self.messages_per_step = self.size if self.pipeline else 2 * full.num_hidden_layers
        self.bytes_per_message = full.hidden_size * compute_dtype(loaded.model).size
        self.leader = Leader(loaded.model, group, place, self.pipeline)
        loaded.model = self.leader
        self.comm_s_per_step = self.leader.time_step_comm()
        if self.measure_link:
            self.link = {
                "all_sum_latency_s": self.leader.time_all_sum(1, LINK_ROUNDS),
                "all_sum_bandwidth_bytes_s": 4 * LINK_WIDTH / self.leader.time_all_sum(LINK_WIDTH, 5),
            }
        loaded.group = self
        return loaded

    def info(self) -> dict:
        """The full model's facts, as a single process reports them, plus the group's."""
        return {**self.full_info, "cluster": self.figures().as_dict()}

    def figures(self) -> ClusterInfo:
        """Plain numbers about the group (no MLX call: safe from any thread)."""
        per_rank = tuple(
            RankInfo(r, self.hosts[r].ssh, w, kv, *self.holds[r])
            for r, (w, kv) in enumerate(self.leader.figures if self.leader else [])
        )
        return ClusterInfo(
            ranks=self.size,
            backend="ring",
            mode=PIPELINE if self.pipeline else TENSOR,
            per_rank=per_rank,
            comm_s_per_step=self.comm_s_per_step,
            messages_per_step=self.messages_per_step,
            bytes_per_message=self.bytes_per_message,
        )

    def timing(self) -> Optional[StepTiming]:
        """The latest decode step timed collective by collective (see step_timer); None before the first."""
        return self.leader.timer.last if self.leader else None

    def close(self) -> None:
        """End the followers and reap them (see `mirror.follow` for why there is no stop message)."""
        self.stopping = True
        self._kill_followers()
        self.folder.cleanup()

    def _kill_followers(self) -> None:
        for proc in self.followers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
