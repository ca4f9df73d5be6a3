"""`glasschat bench --ranks N` (or `--hostfile FILE`): prefill and decode with 1 and N ranks, and what the link costs.

Each setting runs the same greedy turn through the engine (one process; N ranks
in tensor parallel; N ranks in pipeline), so the tokens must agree, and reports
prefill and decode tok/s, the communication of a decode step (timed alone at
start, and inside real steps by the step timer), and each rank's bytes. The
group also times the loopback link itself: an all_sum of one value (latency)
and of 4 MB (bandwidth). `estimate` turns such figures and published link
speeds into the decode speed of a 70B model over 2 and 4 Macs; the README's
"More than one machine" section shows the same arithmetic.
"""

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import Optional

from bench.report import finish, progress
from bench.run import FILLER, machine_info
from model.cache.settings import CacheSettings
from model.distributed.group import LocalGroup
from model.distributed.hostfile import check_reachable, read_hostfile
from model.errors import ModelError
from model.runtime.headless import HeadlessSession
from model.runtime.settings import EngineOptions

DECODE_CAP = 64  # tokens per setting at most: a decode step of the default model over 2 ranks on 2 busy cores is ~1 s
PROMPT = "Summarise this in one paragraph. " + FILLER * 2  # about 140 tokens with the template

# Published link speeds, bytes/s (line rate; TCP over them gets somewhat less).
LINKS = {
    "10 GbE": 10e9 / 8,
    "Thunderbolt 4 (40 Gb/s)": 40e9 / 8,
    "Thunderbolt 5 (80 Gb/s)": 80e9 / 8,
    "Thunderbolt 5 (120 Gb/s, Bandwidth Boost)": 120e9 / 8,
}
IDLE_HOP_S = 25e-6  # one TCP hop's software and wire latency on an idle Mac (an assumption, typical of 10 GbE/TB)


@dataclass(frozen=True)
class BigModel:
    """The model the estimate is for: Llama-3-70B in 4 bits, on M2 Ultra Macs."""

    layers: int = 80
    hidden: int = 8192
    weight_bytes: float = 70.6e9 * 4.5 / 8  # 4-bit weights plus a 16-bit scale and bias per 64: 4.5 bits each
    memory_bytes_s: float = 800e9  # M2 Ultra's memory bandwidth: a decode step reads every weight once
    message_bytes: int = 8192 * 2  # one token's residual stream in float16


def estimate(hop_s: float, ranks: int, link_bytes_s: float, model: BigModel = BigModel()) -> dict:
    """Seconds per decode token, tensor parallel and pipeline, over `ranks` Macs joined in a ring.

    Tensor: every Mac reads 1/N of the weights, then 2 x layers all_sums; a ring all_sum is 2(N-1)
    hops, each carrying 1/N of the vector. Pipeline: the stages run one after another (all the
    weights are read per token, 1/N on each Mac), then N hops of the whole vector."""
    weights_s = model.weight_bytes / model.memory_bytes_s
    all_sum_s = 2 * (ranks - 1) * (hop_s + model.message_bytes / ranks / link_bytes_s)
    tensor = {"compute_s": weights_s / ranks, "comm_s": 2 * model.layers * all_sum_s}
    pipeline = {"compute_s": weights_s, "comm_s": ranks * (hop_s + model.message_bytes / link_bytes_s)}
    for row in (tensor, pipeline):
        row["token_s"] = row["compute_s"] + row["comm_s"]
        row["tok_s"] = 1 / row["token_s"]
    return {"tensor": tensor, "pipeline": pipeline}


def estimates(loopback_hop_s: Optional[float]) -> list[dict]:
    """Every link, for 2 and 4 Macs, with the hop latency measured here and with an idle Mac's."""
    hops = {"idle Mac (25 us a hop)": IDLE_HOP_S}
    if loopback_hop_s:
        hops[f"measured here ({loopback_hop_s * 1e6:.0f} us a hop)"] = loopback_hop_s
    return [
        {"link": link, "hop": name, "ranks": n, **estimate(hop_s, n, speed)}
        for link, speed in LINKS.items()
        for name, hop_s in hops.items()
        for n in (2, 4)
    ]


def in_child(args, ranks: int, pipeline: bool) -> dict:
    """`measure` in a process of its own: MLX joins a process to one group only, once."""
    spec = {"model": args.model, "layout": args.layouts.split(",")[0], "decode": min(args.decode_tokens, DECODE_CAP)}
    spec.update(ranks=ranks, pipeline=pipeline, hostfile=args.hostfile if ranks > 1 else None)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ranks", json.dumps(spec)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise ModelError(f"the bench's setting {spec} failed (exit code {proc.returncode}); see the lines above.")
    return json.loads(proc.stdout.decode().splitlines()[-1])


def measure(
    model: Optional[str], layout: str, decode: int, ranks: int, pipeline: bool, log, hostfile: Optional[str] = None
) -> dict:
    """One greedy turn with `ranks` processes (on the hostfile's hosts, if given); its speeds, and the group's figures."""
    options = EngineOptions(model=model, layout=layout, cache=CacheSettings(max_kv_size=2048), max_tokens=decode)
    hosts = read_hostfile(hostfile) if hostfile else None
    group = LocalGroup(ranks, model, layout, pipeline, hosts) if ranks > 1 else None
    if group is not None:
        group.measure_link = True
        options = replace(options, shard=group.shard)
    name = "1 process" if group is None else f"{ranks} ranks, {'pipeline' if pipeline else 'tensor'}"
    log(f"  {name}: loading")
    try:
        session = HeadlessSession(options)
        try:
            result = session.turn(PROMPT)
        finally:
            session.close()
    finally:
        if group is not None:
            group.close()
    if result.failed:
        raise RuntimeError(result.failed.message)
    stats = result.ended.stats
    row = {
        "setting": name,
        "ranks": ranks,
        "mode": "single" if group is None else ("pipeline" if pipeline else "tensor"),
        "prefill_tokens": stats.prompt_tokens,
        "prefill_tok_s": stats.prefill_tok_s,
        "decode_tokens": stats.generated_tokens,
        "decode_tok_s": stats.decode_tok_s,
        "token_ids": list(result.ended.token_ids),
    }
    if group is not None:
        figures = group.figures().as_dict()
        timed = [step.timing for step in result.cluster if step.timing is not None]
        row.update(
            comm_s_per_step=figures["comm_s_per_step"],
            step_comm_s=sum(t.comm_s for t in timed) / len(timed) if timed else None,
            step_compute_s=sum(t.compute_s for t in timed) / len(timed) if timed else None,
            messages_per_step=figures["messages_per_step"],
            bytes_per_message=figures["bytes_per_message"],
            per_rank=figures["per_rank"],
            **group.link,
        )
    log(f"  {name}: prefill {row['prefill_tok_s']:.1f} tok/s, decode {row['decode_tok_s']:.2f} tok/s")
    return row


def run(args) -> int:
    log = progress(args.json)
    ranks, where = args.ranks, "on this machine"
    if args.hostfile:
        hosts = read_hostfile(args.hostfile)
        check_reachable(hosts)  # one line now, rather than from inside a setting's process
        ranks, where = len(hosts), "over " + ", ".join(h.ssh for h in hosts)
    log(f"ranks: 1 process, then {ranks} ranks in tensor parallel and in pipeline, {where}")
    rows = [in_child(args, 1, False)]
    rows += [in_child(args, ranks, pipeline) for pipeline in (False, True)]
    reference = rows[0]["token_ids"]
    for row in rows:
        row["same_tokens"] = row.pop("token_ids") == reference
    link = rows[1]
    hop_s = link["all_sum_latency_s"] / (2 * (ranks - 1)) if link.get("all_sum_latency_s") else None
    report = {"machine": machine_info("cpu"), "settings": rows, "estimate_70b": estimates(hop_s)}
    return finish(report, args.json, print_report)


def print_report(report: dict) -> None:
    print(
        f"\n{'setting':24} {'prefill tok/s':>13} {'decode tok/s':>12} {'comm/token':>11} {'in a step':>10}  same tokens"
    )
    for r in report["settings"]:
        comm = f"{r['comm_s_per_step'] * 1000:8.2f} ms" if r.get("comm_s_per_step") is not None else f"{'-':>11}"
        step = f"{r['step_comm_s'] * 1000:7.2f} ms" if r.get("step_comm_s") is not None else f"{'-':>10}"
        print(
            f"{r['setting']:24} {r['prefill_tok_s']:13.1f} {r['decode_tok_s']:12.2f} {comm} {step}  {r['same_tokens']}"
        )
    link = report["settings"][1]
    print(
        f"\nloopback all_sum: {link['all_sum_latency_s'] * 1e6:.0f} us for one value, "
        f"{link['all_sum_bandwidth_bytes_s'] / 1e9:.2f} GB/s for 4 MB; a decode step sends "
        f"{link['messages_per_step']} x {link['bytes_per_message']} bytes (tensor parallel)"
    )
    for r in report["settings"][1:]:
        shares = ", ".join(
            f"rank {p['rank']} {p['weight_bytes'] / 2**20:.0f} MB weights, {p['kv_bytes'] / 2**20:.1f} MB KV"
            for p in r["per_rank"]
        )
        print(f"  {r['setting']}: {shares}")
    print("\nestimate, Llama-3-70B 4-bit on M2 Ultra Macs, decode tok/s (tensor / pipeline):")
    rows = report["estimate_70b"]
    for two, four in zip(rows[::2], rows[1::2]):
        speeds = [
            f"{n} Macs {e['tensor']['tok_s']:5.1f} / {e['pipeline']['tok_s']:5.1f}" for n, e in ((2, two), (4, four))
        ]
        print(f"  {two['link']:42} {two['hop']:28} " + ", ".join(speeds))


if __name__ == "__main__":  # one setting (see `in_child`): its row as the last line of stdout
    spec = json.loads(sys.argv[1])
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    row = measure(spec["model"], spec["layout"], spec["decode"], spec["ranks"], spec["pipeline"], say, spec["hostfile"])
    print(json.dumps(row))
