"""A stand-in for bench.llama_peer's child: the real protocol, and a death like llama.cpp's on an AMX-less VM.

argv: MODE PATH THREADS [--plain]. MODE says when the repacked ("extra buffers") child
kills itself with SIGILL: `load`, `eval` (its first request), `always` (plain too), or `never`.
Its answers say which child gave them: 1 s to first token with repacked buffers, 2 s with plain.
"""

import os
import signal
import sys

from bench.llama_peer import protocol_stdout, serve


class FakeRunner:
    def __init__(self, mode: str, plain: bool):
        self.mode, self.plain = mode, plain
        if mode == "always" or (mode == "load" and not plain):
            os.kill(os.getpid(), signal.SIGILL)

    def ttft(self, ids, n=None) -> dict:
        if self.mode == "eval" and not self.plain:
            os.kill(os.getpid(), signal.SIGILL)
        return {"seconds": 2.0 if self.plain else 1.0}

    def decode(self, ids, n) -> dict:
        return {"times": [0.1 * i for i in range(n)]}


if __name__ == "__main__":
    mode, plain = sys.argv[1], "--plain" in sys.argv
    serve(lambda: FakeRunner(mode, plain), protocol_stdout())
