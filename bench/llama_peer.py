"""llama.cpp as a bench peer, in a child process, so that a crash in its kernels cannot end the bench.

llama-cpp-python built natively repacks Q4 weights into the CPU's "extra" buffer
types at load (AMX, where the CPU flags advertise it). In a VM that advertises AMX
without granting it, that load dies with SIGILL, and in-process it took the whole
bench with it. Here the model runs in a child (`python -m bench.llama_peer`); if
the child dies from a signal, the peer starts it again with plain buffers
(`use_extra_bufts = False`) and retries, and `buffers` says which it used.

The two sides talk in JSON lines: the child writes {"ready": ...} once loaded,
then answers each request ({"op": "ttft" | "decode", "ids": [...], "n": ...}) with
one line. Times are taken in the child, around llama.cpp's own calls.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python is installed; found without importing it, which loads its library."""
    return importlib.util.find_spec("llama_cpp") is not None


PLAIN = "plain buffers (use_extra_bufts=False)"
EXTRA = "repacked buffers (llama.cpp's default)"


class PeerFailed(Exception):
    """llama.cpp could not be measured; the message is one line for the bench's report."""


class LlamaCppEngine:
    """The bench's view of llama.cpp: `time_to_first_token` and `decode_times`, answered by the child."""

    name = "llama.cpp"

    def __init__(self, path: str, threads: int, command: Optional[list[str]] = None):
        # `command` runs the child; tests pass a stand-in that dies the way llama.cpp does.
        self.command = command or [sys.executable, "-m", "bench.llama_peer"]
        self.args = [path, str(threads)]
        self.plain = False
        self.served = {EXTRA: 0, PLAIN: 0}  # answers per buffer kind, in case the switch came mid-run
        self.death = ""  # how the repacked child died, if it did
        self.child: Optional[subprocess.Popen] = None
        self._start_or_fall_back()

    @property
    def buffers(self) -> str:
        """Which buffers the figures came from, in words."""
        if not self.plain:
            return EXTRA
        early = f"; {self.served[EXTRA]} measurements before that used repacked ones" if self.served[EXTRA] else ""
        return f"{PLAIN}, after the repacked load {self.death}{early}"

    def time_to_first_token(self, ids) -> float:
        return self._ask({"op": "ttft", "ids": list(ids)})["seconds"]

    def decode_times(self, ids, n) -> list[float]:
        return self._ask({"op": "decode", "ids": list(ids), "n": n})["times"]

    def close(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.stdin.close()
            self.child.wait(timeout=30)

    def _ask(self, request: dict) -> dict:
        try:
            answer = self._exchange(request)
        except _ChildDied as died:
            self._fall_back(died)
            answer = self._exchange(request)  # a second death is final: PeerFailed
        self.served[PLAIN if self.plain else EXTRA] += 1
        return answer

    def _start_or_fall_back(self) -> None:
        try:
            self._start()
        except _ChildDied as died:
            self._fall_back(died)

    def _fall_back(self, died: "_ChildDied") -> None:
        if self.plain or died.signal is None:
            raise died
        self.death = f"died with {died.signal}"
        self.plain = True
        self._start()

    def _start(self) -> None:
        self.log = tempfile.TemporaryFile()  # the child's stderr, read back only if it dies
        root = str(Path(__file__).resolve().parent.parent)  # the child imports this same checkout
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.child = subprocess.Popen(
            [*self.command, *self.args, *(["--plain"] if self.plain else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            text=True,
        )
        ready = self._read()
        if "error" in ready:
            self.child.wait()
            raise PeerFailed(ready["error"])

    def _exchange(self, request: dict) -> dict:
        try:
            self.child.stdin.write(json.dumps(request) + "\n")
            self.child.stdin.flush()
        except BrokenPipeError:
            pass  # it died; _read says how
        return self._read()

    def _read(self) -> dict:
        line = self.child.stdout.readline()
        if line:
            return json.loads(line)
        code = self.child.wait()
        self.log.seek(0)
        tail = self.log.read().decode(errors="replace").strip().splitlines()[-1:]
        raise _ChildDied(code, tail[0] if tail else "")


class _ChildDied(PeerFailed):
    def __init__(self, code: int, last_line: str):
        self.signal = signal.Signals(-code).name if code < 0 else None
        how = f"died with {self.signal}" if self.signal else f"exited with status {code}"
        super().__init__(f"llama.cpp {how}" + (f": {last_line}" if last_line else ""))


# --- the child ------------------------------------------------------------------


class LlamaRunner:
    """llama-cpp-python on the GGUF, greedy, timed around its own calls."""

    def __init__(self, path: str, threads: int, plain: bool):
        import llama_cpp

        if plain:
            _without_extra_buffers()
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_threads=threads, n_batch=512, verbose=False)

    def ttft(self, ids, n=None) -> dict:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(ids)
        self.llm.sample(temp=0.0)
        return {"seconds": time.perf_counter() - start}

    def decode(self, ids, n) -> dict:
        self.llm.reset()
        times = []
        for _ in self.llm.generate(ids, temp=0.0, reset=True):
            times.append(time.perf_counter())
            if len(times) == n:
                break
        return {"times": times}


def _without_extra_buffers() -> None:
    """`Llama()` takes no use_extra_bufts; it reads the defaults from this function, so change them there."""
    native = sys.modules["llama_cpp.llama_cpp"]
    defaults = native.llama_model_default_params
    if not hasattr(defaults(), "use_extra_bufts"):
        raise RuntimeError("this llama-cpp-python cannot turn off repacked buffers (no use_extra_bufts)")

    def plain_defaults():
        params = defaults()
        params.use_extra_bufts = False
        return params

    native.llama_model_default_params = plain_defaults


def serve(make_runner, answers) -> None:
    """Answer requests from stdin, one JSON line each, on `answers` (the real stdout)."""

    def say(obj) -> None:
        answers.write(json.dumps(obj) + "\n")
        answers.flush()

    try:
        runner = make_runner()
    except Exception as exc:  # a load failure is the bench's one line, not a traceback
        say({"error": f"llama.cpp did not load: {exc}"})
        return
    say({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        say(getattr(runner, request["op"])(request["ids"], request.get("n")))


def protocol_stdout():
    """The real stdout for answers; fd 1 then goes to stderr, so llama.cpp's own prints cannot mix in."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return answers


def main(argv: list[str]) -> None:
    path, threads = argv[0], int(argv[1])
    serve(lambda: LlamaRunner(path, threads, plain="--plain" in argv), protocol_stdout())


if __name__ == "__main__":
    main(sys.argv[1:])
