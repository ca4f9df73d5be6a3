"""The fuzz tests' loader: a child process that loads each model it is sent and says how that ended.

tests/test_fuzz_files.py starts one and sends it paths, one a line. For each it loads the model as
`glasschat run --model PATH` does, makes a cache, renders and encodes a first turn with its template
as a conversation's owner does (`ChatText`) and prefills it, then writes one JSON line: "loaded"; "refused" with the ModelError's one line; or
"crashed" with the traceback; with the seconds it took and its peak resident memory so far. A hang or
a death is seen by the parent (no line comes). Its address space is capped 2 GB above what it holds
once warm, so a case that would take more fails here instead of in the machine's swap.

Why the address space, and measured against what: MLX imports and runs under RLIMIT_AS (289 MB of
address space after import here, 538 MB after a turn on the default model, 255 MB resident); so it
does under RLIMIT_DATA. A cap relative to the warm size, not an absolute one, leaves room for what a
machine with more cores reserves (OpenBLAS's buffers per thread). Past the cap numpy and Python raise
MemoryError, but MLX's CPU allocator does not check: a 3 GB `mx.zeros` there is a segmentation fault.
Either way the parent reports the case (a "crashed" line, or a death), with the peak resident memory.
"""

import gc
import json
import resource
import sys
import time
import traceback

import model  # noqa: F401  (first: gives MLX OpenBLAS before mlx loads)

# isort: split
import mlx.core as mx

from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings
from model.errors import ModelError
from model.loading.chat_template import Message
from model.loading.loader import load_model
from model.runtime.chat_text import ChatText

HEADROOM = 2 << 30  # the bound on any hostile case


def try_one(path: str) -> None:
    """Load, then a first turn as a session runs it: a cache, the prompt through the template, a prefill."""
    loaded = load_model(path)
    cache = make_cache(loaded.model, CacheSettings(max_kv_size=256))
    text = ChatText(loaded.template, loaded.tokenizer, loaded.config.vocab_size)
    text.sink_length(None)  # the owner's first use of the template: the sink it keeps
    ids = text.render([Message("user", text.readable("Hello there"))], generation_prompt=True)
    logits = loaded.model(mx.array([ids[-64:] or [0]]), cache=cache, last_only=True)
    mx.eval(logits)


def vm_hwm() -> int:
    """This process's own peak resident memory (its address space is new at exec), in bytes."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def vm_size() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def main() -> None:
    for warm in sys.argv[1:]:  # MLX's and the kernel's one-time set-up, before the cap and the clock
        try_one(warm)
    limit = vm_size() + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        start = time.monotonic()
        try:
            try_one(line.rstrip("\n"))
            outcome, text = "loaded", ""
        except ModelError as exc:
            outcome, text = "refused", str(exc)
        except BaseException:  # anything else is what the fuzz tests look for
            outcome, text = "crashed", traceback.format_exc()[-3000:]
        gc.collect()
        peak = vm_hwm()  # not ru_maxrss: Linux carries the spawning pytest process's high-water mark into it
        report = {"outcome": outcome, "text": text, "seconds": time.monotonic() - start, "peak_rss": peak}
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
