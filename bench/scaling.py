"""`glasschat bench --scaling`: resident memory by weight layout, and the speed of a 1B-Llama-shaped model.

Two questions the default model (135M parameters) cannot answer alone:
- Memory: is a model's resident size its file's? Each layout loads in a fresh child
  process (RSS is process-wide), which reports its RSS after the imports, after the
  load, and after a prefill, against the file's size and the KV cache's bytes. The
  target with 4-bit weights: file + cache + under 300 MB.
- Scaling: a model with Llama 3.2 1B's shape (16 layers, width 2048, 32 query and 8
  KV heads, MLP 8192, vocabulary 128256, tied embeddings) and random 4-bit weights,
  built at bench time in a child: prefill and decode tok/s, plain and with prompt
  lookup, the cost of an 8-row verify pass against a 1-row step, and its RSS.
  Random weights make the speed real but the replies meaningless: lookup's
  acceptance there says nothing about text, the pass cost does.

llama.cpp runs the same shape from a random Q4_1 GGUF written at bench time
(`bench.random_gguf`, the default model's vocabulary padded to 128256), in its child
process as in the main bench; its RSS is that child's, not measured here.
"""

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.report import finish, progress
from model import blas as _blas  # noqa: F401  (first: MLX gets its BLAS before mlx loads)

LLAMA_1B = dict(  # Llama 3.2 1B's shape (its config.json)
    hidden_size=2048,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    intermediate_size=8192,
    vocab_size=128256,
    rope_theta=500000.0,
    max_position_embeddings=131072,
    tie_word_embeddings=True,
)
TARGET_OVERHEAD = 300 * 2**20  # resident bytes beyond file + cache (issue 18's target)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _prompt(n: int) -> list[int]:
    from bench.run import prompt_ids
    from model.loading.loader import load_tokenizer

    return prompt_ids(load_tokenizer(), n)


def _cache(model, capacity: int):
    from model.cache.kv_factory import make_cache
    from model.cache.settings import CacheSettings

    return make_cache(model, CacheSettings(max_kv_size=capacity, keep=4))


def memory_child(layout: str, prompt: int) -> dict:
    """RSS of the default model in `layout`: after the imports, the load, and a `prompt`-token prefill."""
    import mlx.core as mx

    from model.loading.loader import load_model
    from model.runtime.generate import prefill

    ids = _prompt(prompt)
    start = rss()
    loaded = load_model(None, layout=layout)
    after_load = rss()
    cache = _cache(loaded.model, 2048)
    mx.eval(prefill(loaded.model, cache, ids))
    return {
        "layout": loaded.layout,
        "weight_dtype": loaded.info()["weight_dtype"],
        "file_bytes": Path(loaded.path).stat().st_size,
        "weight_bytes": loaded.info()["weight_bytes"],
        "cache_bytes": sum(layer.nbytes() for layer in cache.layers),
        "rss_imports": start,
        "rss_loaded": after_load,
        "rss_prefilled": rss(),
        "prompt_tokens": len(ids),
    }


def random_llama(shape: dict, bits: int = 4, group_size: int = 32, seed: int = 0):
    """A Transformer of `shape` with random weights, quantized as `mx.quantize` does (never whole in float32)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from model.network.config import ModelConfig
    from model.network.quantized import quantize
    from model.network.transformer import Transformer

    config = ModelConfig("llama", **shape)
    model = Transformer(config, fused=True)  # q/k/v and gate/up as one matrix each, as the loader builds it
    paths = {p: m.weight.shape for p, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    quantize(model, {p: {"group_size": group_size, "bits": bits} for p in paths})
    weights = []
    for i, (path, (rows, cols)) in enumerate(sorted(paths.items())):
        parts = []
        for r0 in range(0, rows, 8192):  # ~64 MB of float32 at a time
            w = 0.02 * mx.random.normal((min(8192, rows - r0), cols), key=mx.random.key(seed * 100003 + i * 1000 + r0))
            parts.append(mx.quantize(w, group_size=group_size, bits=bits))
            mx.eval(parts[-1])
        for j, name in enumerate(("weight", "scales", "biases")):
            weights.append((f"{path}.{name}", mx.concatenate([p[j] for p in parts])))
    model.load_weights(weights, strict=False)  # the norms keep their ones
    mx.eval(model.parameters())
    mx.clear_cache()  # the float32 scratch MLX's allocator keeps: not the model's
    _trim_heap()
    return model, sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def _trim_heap() -> None:
    """Hand the build's freed pieces back to the system: glibc keeps them in its heap (measured: 307 MB
    of RSS for the 1B shape's chunk-by-chunk quantization), which a model loaded from a file never had."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim, or no way to
        pass


def pass_cost(model, rows: int, repeats: int) -> float:
    """One forward pass of `rows` rows over one of 1 row, best of `repeats` interleaved."""
    import mlx.core as mx

    cache = _cache(model, 512)
    mx.eval(model(mx.array([list(range(100, 164))]), cache))
    best = {1: float("inf"), rows: float("inf")}
    for _ in range(repeats):
        for r in (1, rows):
            start = time.perf_counter()
            mx.eval(model(mx.array([list(range(200, 200 + r))]), cache))
            best[r] = min(best[r], time.perf_counter() - start)
            cache.rollback(r)  # the same length for every pass
    return best[rows] / best[1]


def timed_decode(model, ids: list[int], tokens: int, lookup: bool) -> tuple[float, dict]:
    """Greedy decode tok/s after `ids` (timed from the end of the prefill), and lookup's counts."""
    import mlx.core as mx

    from model.runtime.generate import decode, prefill
    from model.runtime.settings import LookupSettings, SamplingSettings
    from model.runtime.speculate import DraftPolicy

    cache = _cache(model, len(ids) + tokens + 16)
    logits = prefill(model, cache, ids)
    mx.eval(logits)
    policy = DraftPolicy(LookupSettings(enabled=True)) if lookup else None
    start, n, last = time.perf_counter(), 0, 0.0
    for _ in decode(model, cache, logits, SamplingSettings(), tokens, recent_ids=ids, lookup=policy):
        n += 1
        last = time.perf_counter()
    counts = {"drafted": policy.drafted, "accepted": policy.accepted, "passes": policy.passes} if policy else {}
    return n / (last - start), counts


def scaling_child(prompt: int, tokens: int, repeats: int) -> dict:
    """The 1B-shaped random model: build, prefill, decode plain and with lookup, pass cost, RSS."""
    import mlx.core as mx

    from model.kernels import qmv
    from model.runtime.generate import prefill

    ids = _prompt(prompt)
    start = rss()
    t0 = time.perf_counter()
    net, weight_bytes = random_llama(LLAMA_1B)
    built_s = time.perf_counter() - t0
    after_build = rss()
    cache = _cache(net, len(ids) + 16)
    t0 = time.perf_counter()
    mx.eval(prefill(net, cache, ids))
    prefill_tok_s = len(ids) / (time.perf_counter() - t0)
    result = {
        "shape": LLAMA_1B,
        "weights": "random, 4-bit affine, group 32",
        "matvec": qmv.describe(),
        "weight_bytes": weight_bytes,
        "build_s": built_s,
        "prefill_tokens": len(ids),
        "prefill_tok_s": prefill_tok_s,
        "cache_bytes": sum(layer.nbytes() for layer in cache.layers),
        "rss_imports": start,
        "rss_built": after_build,
        "rss_prefilled": rss(),
    }
    del cache
    short = ids[:64]  # decode after a short prompt: the step, not the attention over 512 keys
    rounds = [(timed_decode(net, short, tokens, False), timed_decode(net, short, tokens, True)) for _ in range(repeats)]
    result["decode_tok_s"] = max(plain for (plain, _), _ in rounds)
    result["lookup_tok_s"] = max(guessed for _, (guessed, _) in rounds)
    result["lookup_counts"] = rounds[-1][1][1]
    result["verify_8_over_1"] = pass_cost(net, 8, max(3, repeats))
    return result


def _child(*args: str) -> dict:
    """Run this module in a fresh process (clean RSS); its JSON answer."""
    out = subprocess.run([sys.executable, "-m", "bench.scaling", *args], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {out.returncode}: {tail[:200]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def llama_cpp_on_shape(args, prompt: int, log) -> dict:
    """llama.cpp's prefill and decode on LLAMA_1B's shape, from a random Q4_1 GGUF in a temporary folder."""
    import tempfile

    from bench.llama_peer import LlamaCppEngine, PeerFailed, llama_cpp_available
    from bench.random_gguf import write_random_llama
    from bench.run import measure
    from model.loading.default_model import default_model_path
    from model.loading.loader import load_tokenizer

    if not llama_cpp_available():
        return {"error": "not installed (pip install 'glasschat[llamacpp]')"}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = write_random_llama(Path(tmp) / "llama-1b-shape-random.Q4_1.gguf", LLAMA_1B, default_model_path())
        written = {"gguf_bytes": path.stat().st_size, "write_s": time.perf_counter() - start}
        log(f"  llama.cpp: wrote a {written['gguf_bytes'] / 2**20:.0f} MB Q4_1 GGUF in {written['write_s']:.0f} s")
        peer = None
        try:
            peer = LlamaCppEngine(str(path), threads=os.cpu_count() or 1)
            r = measure(peer, "gguf", load_tokenizer(), [prompt], args.decode_tokens, args.repeats, log, args.budget)
        except PeerFailed as exc:
            return {"error": str(exc), **written}
        finally:
            if peer is not None:
                peer.close()
    return {
        "prefill_tok_s": r.prefill_tok_s.get(prompt),
        "decode_tok_s": r.decode_tok_s,
        "buffers": peer.buffers,
        "note": r.note,
        **written,
    }


def run(args) -> int:
    log = progress(args.json)
    prompt = max(int(s) for s in args.sizes.split(",") if int(s) <= 512) if args.sizes else 512
    report = {"memory": [], "llama_1b_shape": {}}
    for layout in args.layouts.split(","):
        log(f"memory: the default model, {layout}, in a fresh process ({prompt}-token prefill)")
        report["memory"].append(_child("memory", layout, str(prompt)))
    log(f"1B shape: random 4-bit weights, {prompt}-token prefill, {args.decode_tokens} tokens decoded")
    report["llama_1b_shape"] = _child("scale", str(prompt), str(args.decode_tokens), str(args.repeats))
    log("1B shape: llama.cpp on a random Q4_1 GGUF of the same shape")
    report["llama_cpp_1b_shape"] = llama_cpp_on_shape(args, prompt, log)
    return finish(report, args.json, print_report)


def print_report(report: dict) -> None:
    mb = 2**20
    print("\nresident memory (MB; RSS of a fresh process; overhead = RSS after prefill - file - cache)")
    print(
        f"{'layout':10} {'file':>7} {'weights':>8} {'cache':>7} {'imports':>8} {'loaded':>8} {'prefill':>8} {'overhead':>9}"
    )
    for m in report["memory"]:
        if "error" in m:
            print(f"  not measured: {m['error']}")
            continue
        over = m["rss_prefilled"] - m["file_bytes"] - m["cache_bytes"]
        mark = "ok" if over < TARGET_OVERHEAD else "over the 300 MB target"
        print(
            f"{m['layout']:10} {m['file_bytes'] / mb:7.0f} {m['weight_bytes'] / mb:8.0f} {m['cache_bytes'] / mb:7.0f} "
            f"{m['rss_imports'] / mb:8.0f} {m['rss_loaded'] / mb:8.0f} {m['rss_prefilled'] / mb:8.0f} "
            f"{over / mb:9.0f}  {mark if m['layout'] == 'quantized' else ''}"
        )
    s = report["llama_1b_shape"]
    print("\nLlama 3.2 1B shape, random 4-bit weights (speed is real, replies are not)")
    if "error" in s:
        print(f"  not measured: {s['error']}")
        return
    c = s["lookup_counts"]
    print(
        f"  {s['matvec']}; weights {s['weight_bytes'] / mb:.0f} MB (built in {s['build_s']:.0f} s)\n"
        f"  prefill {s['prefill_tokens']} tokens: {s['prefill_tok_s']:.1f} tok/s\n"
        f"  decode: {s['decode_tok_s']:.1f} tok/s plain, {s['lookup_tok_s']:.1f} with prompt lookup "
        f"({c['accepted']}/{c['drafted']} guesses kept in {c['passes']} passes)\n"
        f"  verify pass of 8 rows: {s['verify_8_over_1']:.2f}x a 1-row step\n"
        f"  RSS: {s['rss_imports'] / mb:.0f} MB after imports, {s['rss_built'] / mb:.0f} built, "
        f"{s['rss_prefilled'] / mb:.0f} after prefill (weights {s['weight_bytes'] / mb:.0f} + cache "
        f"{s['cache_bytes'] / mb:.0f}; overhead {(s['rss_prefilled'] - s['weight_bytes'] - s['cache_bytes']) / mb:.0f})"
    )
    peer = report.get("llama_cpp_1b_shape") or {}
    if "error" in peer:
        print(f"  llama.cpp on this shape: not measured: {peer['error']}")
    elif peer:
        prefill = peer["prefill_tok_s"]
        print(
            f"  llama.cpp on this shape ({peer['buffers']}): prefill {prefill or float('nan'):.1f} tok/s, decode "
            f"{peer['decode_tok_s']:.1f} tok/s; ours / llama.cpp: decode {s['decode_tok_s'] / peer['decode_tok_s']:.2f}x"
            + (f", prefill {s['prefill_tok_s'] / prefill:.2f}x" if prefill else "")
        )


if __name__ == "__main__":
    kind, *rest = sys.argv[1:]
    if kind == "memory":
        out = memory_child(rest[0], int(rest[1]))
    else:
        out = scaling_child(int(rest[0]), int(rest[1]), int(rest[2]))
    print(json.dumps(out))
