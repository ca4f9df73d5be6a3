"""`glasschat bench`: our engine against mlx-lm and llama.cpp, same model file, same run.

Reports prefill tok/s at several prompt lengths, decode tok/s, time to first
token, peak memory, and the ratios against each peer. Speed lives here, not in
the tests: this machine is noisy, so only ratios measured side by side mean much.
"""

import os
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import mlx.core as mx

from bench.llama_peer import LlamaCppEngine, PeerFailed, llama_cpp_available
from bench.lookup import lookup_speed
from bench.peers import MlxLmEngine, OurEngine
from bench.report import finish, progress
from bench.step_profile import describe as describe_step
from bench.step_profile import profile_decode_step
from model import compute_path
from model.blas import BlasInfo, blas_info
from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings
from model.internals.needs import StepNeeds
from model.runtime.generate import decode, prefill
from model.runtime.model_source import stop_ids
from model.runtime.settings import SamplingSettings
from model.runtime.speculate import pays_off
from model.runtime.stats import tokens_per_s

FILLER = (
    "The history of science is the study of the development of science and scientific knowledge, "
    "including both the natural and social sciences. Science is a body of empirical, theoretical, and "
    "practical knowledge about the natural world, produced by scientists who emphasize the observation, "
    "explanation, and prediction of real-world phenomena. "
)


@dataclass
class EngineResult:
    engine: str
    layout: str
    prefill_tok_s: dict = field(default_factory=dict)  # prompt length -> tok/s
    ttft_s: float = 0.0  # first token after a 64-token prompt
    decode_tok_s: float = 0.0
    decode_tokens: int = 0
    context_decode_tok_s: dict = field(default_factory=dict)  # tokens of context -> decode tok/s after them
    mlx_peak_bytes: int = 0
    rss_bytes: int = 0
    note: str = ""


def prompt_ids(tokenizer, n: int) -> list[int]:
    ids = tokenizer.encode_text(FILLER)
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(
    engine, layout, tokenizer, sizes, decode_tokens, repeats, log, budget_s, contexts=(), context_tokens=64
) -> EngineResult:
    """Each measurement is skipped when the rates seen so far say it would take over `budget_s`.

    `contexts`: the long-context row, decode of `context_tokens` after each of these prompt lengths."""
    result = EngineResult(engine.name, layout)
    mx.reset_peak_memory()
    start = time.perf_counter()
    engine.time_to_first_token(prompt_ids(tokenizer, 16))  # warm-up: kernels, allocator, compile
    rate = 16 / (time.perf_counter() - start)
    skipped = []
    for n in sizes:
        if n / rate > budget_s:
            skipped.append(f"prefill {n} (~{n / rate:.0f} s)")
            log(f"  {engine.name}: prefill {n:5d} tokens  skipped: ~{n / rate:.0f} s at {rate:.1f} tok/s")
            continue
        times = [engine.time_to_first_token(prompt_ids(tokenizer, n)) for _ in range(repeats)]
        result.prefill_tok_s[n] = rate = n / statistics.median(times)
        log(f"  {engine.name}: prefill {n:5d} tokens  {result.prefill_tok_s[n]:8.1f} tok/s")
    result.ttft_s = statistics.median(engine.time_to_first_token(prompt_ids(tokenizer, 64)) for _ in range(repeats))
    probe = engine.decode_times(prompt_ids(tokenizer, 64), 4)
    step_s = (probe[-1] - probe[0]) / max(len(probe) - 1, 1)
    if decode_tokens * step_s > budget_s:
        decode_tokens = max(8, int(budget_s / step_s))
        skipped.append(f"decode cut to {decode_tokens} tokens")
    times = engine.decode_times(prompt_ids(tokenizer, 64), decode_tokens)
    result.decode_tokens = len(times)
    result.decode_tok_s = tokens_per_s(times)
    log(f"  {engine.name}: decode {len(times)} tokens  {result.decode_tok_s:8.1f} tok/s")
    for n in contexts:  # the long-context row: decode after n tokens of context
        if n / rate + context_tokens * step_s * 4 > budget_s:
            skipped.append(f"decode after {n}")
            continue
        times = engine.decode_times(prompt_ids(tokenizer, n), context_tokens)
        result.context_decode_tok_s[n] = tokens_per_s(times)
        log(f"  {engine.name}: decode after {n:5d} tokens  {result.context_decode_tok_s[n]:8.1f} tok/s")
    result.note = "; ".join(skipped)
    result.mlx_peak_bytes = mx.get_peak_memory()
    result.rss_bytes = current_rss()
    return result


def measure_llama_cpp(path, tokenizer, sizes, args, log, command=None) -> tuple[Optional[EngineResult], str]:
    """llama.cpp in its own process (see bench.llama_peer): its figures if it ran, and one line on how it went."""
    if command is None and not llama_cpp_available():
        return None, "not installed (pip install 'glasschat[llamacpp]')"
    peer = None
    try:
        peer = LlamaCppEngine(path, threads=os.cpu_count() or 1, command=command)
        result = measure(
            peer, "gguf", tokenizer, sizes, args.decode_tokens, args.repeats, log, args.budget, *long_context(args)
        )
    except PeerFailed as exc:
        return None, f"not measured: {exc}"
    finally:
        if peer is not None:
            peer.close()
    result.note = "; ".join(n for n in (peer.buffers, result.note) if n)
    return result, f"measured with {peer.buffers}"


def eviction_speed(ours: OurEngine, capacity: int, tokens: int, window: int = 16) -> dict:
    """Decode tok/s over the `window` tokens just before and just after each eviction."""
    model = ours.loaded.model
    cache = make_cache(model, CacheSettings(max_kv_size=capacity, keep=20))
    times, evicted_at = [], []
    logits = prefill(model, cache, prompt_ids(ours.loaded.tokenizer, 64))
    # Sampled (seeded) rather than greedy: a greedy reply this long falls into a loop of one token.
    settings = SamplingSettings(temperature=0.8, seed=0)
    for _ in decode(model, cache, logits, settings, tokens, key=mx.random.key(0), needs=StepNeeds(top_k=ours.top_k)):
        times.append(time.perf_counter())
        if cache.evicted_total and (not evicted_at or cache.evicted_total != evicted_at[-1][1]):
            evicted_at.append((len(times) - 1, cache.evicted_total))

    def rate(a, b):
        a, b = max(a, 0), min(b, len(times) - 1)
        return tokens_per_s(times[a : b + 1])

    rows = [
        {
            "token": i,
            "evicted_total": total,
            "before_tok_s": rate(i - window - 1, i - 1),
            "after_tok_s": rate(i + 1, i + window + 1),
            "eviction_step_s": times[i] - times[i - 1],
        }
        for i, total in evicted_at
        if i > window
    ]
    return {"capacity": capacity, "tokens": len(times), "evictions": rows}


def gemm_gflops(m: int = 512, k: int = 576, n: int = 1536, seconds: float = 1.0) -> float:
    """Float32 GEMM through MLX on this backend: shows which BLAS MLX really calls.

    The default shape is one prefill chunk through SmolLM2-135M's MLP (512 tokens, 576 -> 1536):
    about 4 GFLOP/s on the reference BLAS, 60-190 on OpenBLAS with 2 cores.
    """
    a, b = mx.random.normal((m, k)), mx.random.normal((k, n))
    mx.eval(a, b, a @ b)  # warm-up: threads, allocator
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 3:
        mx.eval(a @ b)
        calls += 1
    return 2 * m * k * n * calls / elapsed / 1e9


def machine_info(backend: str) -> dict:
    """What the figures were measured on: backend, BLAS (name, version, core), a GEMM rate, CPUs, mlx."""
    return {
        "backend": backend,
        "path": compute_path.current(),  # which of the model's code paths ran (GLASSCHAT_PATH)
        "blas": blas_info().as_dict(),
        "gemm_gflops": gemm_gflops(),
        "cpus": os.cpu_count(),
        "mlx": mx.__version__,
    }


def ratios(results: list[EngineResult]) -> list[dict]:
    """Each of our layouts against each peer: >1 means we are faster."""
    ours = [r for r in results if r.engine.startswith("glasschat")]
    peers = [r for r in results if not r.engine.startswith("glasschat")]
    out = []
    for a in ours:
        for b in peers:
            row = {
                "ours": a.engine,
                "peer": b.engine,
                "decode": a.decode_tok_s / b.decode_tok_s if b.decode_tok_s else None,
            }
            for n, v in a.context_decode_tok_s.items():
                if b.context_decode_tok_s.get(n):
                    row[f"decode_after_{n}"] = v / b.context_decode_tok_s[n]
            for n, v in a.prefill_tok_s.items():
                if b.prefill_tok_s.get(n):
                    row[f"prefill_{n}"] = v / b.prefill_tok_s[n]
            out.append(row)
    return out


def long_context(args) -> tuple[list[int], int]:
    """The long-context row's prompt lengths and decoded tokens, from --contexts and --context-tokens."""
    return [int(n) for n in args.contexts.split(",") if n], args.context_tokens


def step_profiles(ours: OurEngine, args, log) -> list[dict]:
    """Where a decode step's time goes, after 64 tokens and after each long context (bench.step_profile):
    each as it runs now, then as it ran before attention and the small ops moved into the extension."""
    rows = []
    for n in [64, *long_context(args)[0]]:
        for primitives in (True, False):
            rows.append(profile_decode_step(ours.loaded, prompt_ids(ours.loaded.tokenizer, n), primitives=primitives))
            log(f"  step split, {ours.loaded.layout}: {describe_step(rows[-1])}")
    return rows


def prompt_lookup(ours: OurEngine, args, log) -> dict:
    """The prompt-lookup section (bench.lookup), on our first layout."""
    if not args.lookup_tokens:
        return {}
    log(f"  prompt lookup: {args.lookup_rounds} interleaved rounds of plain and lookup decode, greedy")
    return {
        "layout": ours.loaded.layout,
        "on_by_default": pays_off(ours.loaded.model),  # --prompt-lookup auto's choice for this layout
        **lookup_speed(ours.loaded, stop_ids(ours.loaded.tokenizer), args.lookup_tokens, args.lookup_rounds, log),
    }


def run(args) -> int:
    log = progress(args.json)
    sizes = [int(s) for s in args.sizes.split(",")]
    layouts = args.layouts.split(",")
    backend = compute_path.device()
    machine = machine_info(backend)
    log(
        f"backend {backend} · path {compute_path.describe()} · BLAS {blas_info().summary()}, GEMM {machine['gemm_gflops']:.0f} GFLOP/s · "
        f"mlx {mx.__version__} · sizes {sizes} · decode {args.decode_tokens}"
    )
    if blas_info().note:
        log(f"BLAS: {blas_info().note}")
    if args.lookup_only:
        ours = OurEngine.load(args.model, layouts[0], top_k=args.show_top)
        report = {"machine": machine, "model": ours.info()["source"], "prompt_lookup": prompt_lookup(ours, args, log)}
        return finish(report, args.json, lambda r: print_lookup(r["prompt_lookup"]))
    results: list[EngineResult] = []
    eviction: dict = {}
    lookup: dict = {}
    profiles: list[dict] = []
    first: Optional[OurEngine] = None
    for layout in layouts:
        ours = OurEngine.load(args.model, layout, top_k=args.show_top)
        if first is None:
            lookup = prompt_lookup(ours, args, log)
            profiles = step_profiles(ours, args, log)
        first = first or ours
        results.append(
            measure(
                ours,
                ours.loaded.layout,
                ours.loaded.tokenizer,
                sizes,
                args.decode_tokens,
                args.repeats,
                log,
                args.budget,
                *long_context(args),
            )
        )
        results[-1].note = "; ".join(n for n in (ours.info()["weight_dtype"], results[-1].note) if n)
        if layout == "float32" and not args.skip_extras_check:
            plain = OurEngine(ours.loaded, top_k=0, name=f"glasschat ({ours.loaded.layout}, no top-k)")
            times = plain.decode_times(prompt_ids(ours.loaded.tokenizer, 64), args.decode_tokens)
            bare = tokens_per_s(times)
            r = EngineResult(
                plain.name,
                ours.loaded.layout,
                decode_tok_s=bare,
                decode_tokens=len(times),
                note="per-token extras off (top-k)",
            )
            results.append(r)
            log(
                f"  extras: decode {results[-2].decode_tok_s:.1f} tok/s with top-k, {bare:.1f} without "
                f"({(1 - results[-2].decode_tok_s / bare) * 100:+.1f}% cost)"
            )
            if args.eviction_tokens:
                eviction = eviction_speed(ours, 256, args.eviction_tokens)
                for row in eviction["evictions"]:
                    log(
                        f"  eviction at token {row['token']}: {row['before_tok_s']:.1f} tok/s before, "
                        f"{row['after_tok_s']:.1f} after; the evicting step took {row['eviction_step_s'] * 1000:.0f} ms"
                    )
        del ours
    tokenizer = first.loaded.tokenizer
    for quantized in args.mlx_lm.split(","):
        if not quantized:
            continue
        peer = MlxLmEngine(first, quantized == "quantized")
        results.append(
            measure(
                peer,
                quantized,
                tokenizer,
                sizes,
                args.decode_tokens,
                args.repeats,
                log,
                args.budget,
                *long_context(args),
            )
        )
    peer_result, llama_cpp = measure_llama_cpp(first.loaded.path, tokenizer, sizes, args, log)
    results += [peer_result] if peer_result else []
    log(f"llama.cpp: {llama_cpp}")
    report = {
        "machine": machine,
        "path": machine["path"],
        "model": first.info()["source"],
        "weight_dtype": first.info()["weight_dtype"],
        "llama_cpp": llama_cpp,
        "engines": [asdict(r) for r in results],
        "ratios": ratios(results),
        "eviction": eviction,
        "prompt_lookup": lookup,
        "step_split": profiles,
        "process_peak_rss_bytes": peak_rss(),
    }
    return finish(report, args.json, print_table)


def print_table(report: dict) -> None:
    engines = report["engines"]
    sizes = sorted({int(n) for e in engines for n in e["prefill_tok_s"]})
    contexts = sorted({int(n) for e in engines for n in e.get("context_decode_tok_s", {})})
    head = (
        f"{'engine':38} "
        + " ".join(f"{'pf' + str(n):>8}" for n in sizes)
        + f" {'decode':>8} "
        + " ".join(f"{'dec@' + str(n):>8}" for n in contexts)
        + f" {'ttft':>7} {'mlx peak':>9} {'rss':>8}"
    )
    print("\nprefill and decode in tok/s (dec@N: decode after N tokens of context); ttft in s; memory in MB")
    print(head)

    def rate(table: dict, n: int) -> float:  # JSON turns the int keys into strings; accept both
        return table.get(n, table.get(str(n), float("nan")))

    for e in engines:
        pf = " ".join(f"{rate(e['prefill_tok_s'], n):8.1f}" for n in sizes)
        dec = " ".join(f"{rate(e.get('context_decode_tok_s', {}), n):8.1f}" for n in contexts)
        print(
            f"{e['engine']:38} {pf} {e['decode_tok_s']:8.1f} {dec} {e['ttft_s']:7.3f} "
            f"{e['mlx_peak_bytes'] / 2**20:9.0f} {e['rss_bytes'] / 2**20:8.0f}  {e['note']}"
        )
    print("\nratios (ours / peer; >1 is faster)")
    for r in report["ratios"]:
        parts = [f"decode {r['decode']:.2f}x" if r["decode"] else "decode –"]
        parts += [f"{k.replace('_', ' ')} {v:.2f}x" for k, v in r.items() if k.startswith(("prefill_", "decode_after"))]
        print(f"  {r['ours']} vs {r['peer']}: " + ", ".join(parts))
    if report.get("step_split"):
        print("\nwhere a decode step goes (built, then evaluated; ms)")
        for row in report["step_split"]:
            print(f"  {describe_step(row)}")
    print_lookup(report.get("prompt_lookup") or {})
    machine = report["machine"]
    print(f"\nllama.cpp: {report['llama_cpp']}")
    print(f"BLAS: {BlasInfo(**machine['blas']).summary()}; GEMM {machine['gemm_gflops']:.0f} GFLOP/s")


def print_lookup(lookup: dict) -> None:
    rows = {name: row for name, row in lookup.items() if isinstance(row, dict)}
    if not rows:
        return
    auto = "on" if lookup["on_by_default"] else "off"
    print(f"\nprompt lookup ({lookup['layout']}, greedy; lookup / plain decode, >1 is faster; auto: {auto} here)")
    for name, r in rows.items():
        print(
            f"  {name:10} {r['ratio']:.2f}x  ({r['plain_tok_s']:.1f} -> {r['lookup_tok_s']:.1f} tok/s; "
            f"{r['accepted']}/{r['drafted']} guesses kept, {r['acceptance']:.0%}; "
            f"{r['tokens_per_pass']:.2f} tokens a pass; {r['reply_tokens']} tokens, "
            f"{'identical' if r['identical'] else 'DIFFERENT'} replies)"
        )
