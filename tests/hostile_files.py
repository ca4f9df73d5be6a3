"""Helpers for the hostile-file tests: a command run under a clock and a memory count, and a GGUF written
field by field (so a test can write what no well-behaved writer would: duplicates, gaps, lies)."""

import os
import resource
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TIME_LIMIT_S = 30  # the bound on any hostile case
MEMORY_LIMIT = 2 << 30  # likewise, in bytes of resident memory
# A ceiling on address space so a regression cannot take the test machine down with it (100,000
# layers reached 8.8 GB resident before it died); resident memory is what the test asserts. Generous,
# for the address space a many-core machine's OpenBLAS reserves.
ADDRESS_SPACE_CEILING = 12 << 30


@dataclass
class Bounded:
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    seconds: float
    peak_rss: int  # bytes, the child's own high-water mark (VmHWM), not the test process's

    def assert_one_line(self, *phrases: str) -> str:
        """Refused in one line that says what is wrong, in bounded time and memory, with exit 1 or 2."""
        assert self.returncode in (1, 2), f"exit {self.returncode}: {self.stderr[-2000:]}"
        assert self.seconds < TIME_LIMIT_S, self.seconds
        assert self.peak_rss < MEMORY_LIMIT, self.peak_rss
        assert "Traceback" not in self.stderr
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        for phrase in phrases:
            assert phrase in lines[0], lines[0]
        return lines[0]


def run_bounded(*args: str, timeout: float = TIME_LIMIT_S + 30) -> Bounded:
    """`python -m chat.cli ARGS`, timed, with the child's own peak resident memory (wait4's rusage)."""
    return run_argv([sys.executable, "-m", "chat.cli", *args], timeout)


def run_python(code: str, *args: str, timeout: float = TIME_LIMIT_S + 30) -> Bounded:
    """`python -c CODE ARGS` the same way: for checks that would hang the test process if the product hung."""
    return run_argv([sys.executable, "-c", code, *args], timeout)


def run_argv(argv: list[str], timeout: float) -> Bounded:
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if hasattr(resource, "prlimit"):  # Linux; set from outside (preexec_fn is unsafe in a threaded test process)
        try:
            resource.prlimit(proc.pid, resource.RLIMIT_AS, (ADDRESS_SPACE_CEILING, ADDRESS_SPACE_CEILING))
        except ProcessLookupError:  # already gone: wait4 below reports how
            pass
    streams: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda name=name, f=f: streams.__setitem__(name, f.read()))
        for name, f in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    timer = threading.Timer(timeout, proc.kill)  # a hang ends as SIGKILL: the assertions then fail
    timer.start()
    peak = watch_peak_rss(proc.pid)
    _, status, _usage = os.wait4(proc.pid, 0)
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    decode = lambda b: b.decode("utf-8", errors="replace")  # noqa: E731
    return Bounded(
        proc.returncode, decode(streams["out"]), decode(streams["err"]), time.monotonic() - start,
        peak,
    )  # fmt: skip


def vm_hwm(status_path: str) -> int:
    """VmHWM in bytes from a /proc status file (0 once the process has gone)."""
    try:
        with open(status_path) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def watch_peak_rss(pid: int) -> int:
    """The child's peak resident memory, read from its own high-water mark until it exits.

    Not wait4's ru_maxrss: Linux carries the spawning process's high-water mark over fork and
    exec into it, so a child of a pytest process grown to 2.5 GB reported 2.5 GB however little
    it used. VmHWM belongs to the child's own address space (new at exec). Read every 5 ms, and
    it only grows, so all but the child's last few ms are counted."""
    status_path, peak = f"/proc/{pid}/status", 0
    while True:
        peak = max(peak, vm_hwm(status_path))
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return peak  # exited: a zombie until wait4 reaps it, with nothing more to read
        time.sleep(0.005)


# --- a GGUF written field by field -------------------------------------------------------------------

U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10
GGML = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 8}


def gguf_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def gguf_value(kind: int, value) -> bytes:
    """A metadata value of GGUF type `kind` (arrays: (item kind, [values]))."""
    if kind == STRING:
        return gguf_string(value)
    if kind == ARRAY:
        item, values = value
        return struct.pack("<IQ", item, len(values)) + b"".join(gguf_value(item, v) for v in values)
    if isinstance(value, bytes):  # a type no reader knows: its bytes as given
        return value
    fmt = {
        0: "<B",
        1: "<b",
        2: "<H",
        3: "<h",
        U32: "<I",
        I32: "<i",
        F32: "<f",
        BOOL: "<?",
        U64: "<Q",
        11: "<q",
        12: "<d",
    }
    return struct.pack(fmt[kind], value)


def write_gguf(
    path: Path,
    metadata: list[tuple[str, int, object]],
    tensors: list[tuple[str, list[int], int, int]],
    data: bytes = b"",
    version: int = 3,
    alignment: int = 32,
) -> Path:
    """`tensors`: (name, dims innermost first, ggml type, offset). The data section starts at the next
    multiple of `alignment` after the header, as readers expect."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata)))
    for key, kind, value in metadata:
        out += gguf_string(key) + struct.pack("<I", kind) + gguf_value(kind, value)
    for name, dims, kind, offset in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", kind, offset)
    out += b"\0" * (-len(out) % alignment)
    path.write_bytes(bytes(out) + data)
    return path


def quantize_folder(source: Path, copy: Path, change=lambda weights: None) -> Path:
    """`source` (a float tiny folder) copied in MLX's 4-bit layout, groups of 32, its weights changed by `change`."""
    import json
    import shutil

    import mlx.core as mx

    shutil.copytree(source, copy)
    weights = {}
    for name, value in mx.load(str(source / "model.safetensors")).items():
        if value.ndim == 2:
            w, scales, biases = mx.quantize(value, group_size=32, bits=4)
            stem = name[: -len(".weight")]
            weights.update({name: w, f"{stem}.scales": scales, f"{stem}.biases": biases})
        else:
            weights[name] = value
    change(weights)
    mx.save_safetensors(str(copy / "model.safetensors"), weights)
    config = json.loads((source / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "quantization": {"group_size": 32, "bits": 4}}))
    return copy
