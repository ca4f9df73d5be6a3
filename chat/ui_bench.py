"""Decode speed through the Textual app (headless, driven by Pilot) against the engine alone.

The engine thread and the UI share one Python process (and its GIL) and, on a
small machine, the same cores: a UI that redraws too much slows decoding
down. This measures the same greedy reply to the same prompt, in the same
run: the engine alone, the app with its default panels, with every view
hidden, and with every view shown (the extra views included: the KV cache
grid, attention and logit lens, which make the engine watch a step every
0.4 s, and confidence colouring).

Machines are noisy (±10% between identical runs here, and a whole machine
can drift between rounds), so each setting runs `rounds` times, interleaved,
and each app run is compared with the engine-alone run of its own round: the
report gives the median of those paired ratios, and the medians of the rates.
"""

import argparse
import asyncio
import statistics
import sys

from bench.report import finish
from model.runtime.headless import HeadlessSession
from model.runtime.settings import EngineOptions

from . import views
from .app import GlasschatApp
from .widgets.reply_message import AssistantMessage

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def settings() -> dict[str, dict[str, bool]]:
    """Each setting measured: which views it opens or closes (every view in the table of views)."""
    return {
        "app, default panels": {},
        "app, every view hidden": {spec.id: False for spec in views.VIEWS},
        "app, every view shown": {spec.id: True for spec in views.VIEWS},
    }


def engine_alone(options: EngineOptions) -> float:
    session = HeadlessSession(options)
    try:
        return session.turn(PROMPT).ended.stats.decode_tok_s
    finally:
        session.close()


async def through_app(options: EngineOptions, shown: dict[str, bool]) -> float:
    app = GlasschatApp(options)
    async with app.run_test(size=(160, 50)) as pilot:
        chat = app.chat
        while not chat.ready:
            await pilot.pause(0.1)
        for view_id, on in shown.items():
            await chat.show_view(view_id, on)
        app.query_one("#prompt").insert(PROMPT)
        app.query_one("#prompt").focus()
        await pilot.press("enter")
        # Until the reply has ended (a short one may end before `busy` is ever seen).
        while chat.busy or chat.transcript.reply is not None or not app.query(AssistantMessage):
            await pilot.pause(0.1)
        # The engine's own figure for the turn, as the app received it in TurnEnded.
        return chat.status.decode_tok_s


def run(args: argparse.Namespace) -> int:
    options = EngineOptions(model=args.model, max_tokens=args.decode_tokens)
    rounds = max(1, args.rounds)
    measured = settings()
    rates: dict[str, list[float]] = {"engine alone": [], **{label: [] for label in measured}}
    for r in range(rounds):
        # Interleaved, and each round in a rotated order, so drift hits every setting alike.
        order = list(rates)
        order = order[r % len(order) :] + order[: r % len(order)]
        for label in order:
            if label == "engine alone":
                rate = engine_alone(options)
            else:
                rate = asyncio.run(through_app(options, measured[label]))
            rates[label].append(rate)
            print(f"round {r + 1}/{rounds}  {label}: {rate:.2f} tok/s", file=sys.stderr, flush=True)
    medians = {label: statistics.median(v) for label, v in rates.items()}
    paired = {label: [a / e for a, e in zip(v, rates["engine alone"])] for label, v in rates.items()}
    ratios = {label: statistics.median(r) for label, r in paired.items()}
    report = {
        "decode_tok_s": rates,
        "median_tok_s": medians,
        "paired_ratios": paired,
        "ratio_to_engine": ratios,
        "rounds": rounds,
        "decode_tokens": args.decode_tokens,
    }
    return finish(report, args.json, print_report)


def print_report(report: dict) -> None:
    rates, ratios = report["decode_tok_s"], report["ratio_to_engine"]
    for label, v in report["median_tok_s"].items():
        runs = " ".join(f"{x:.2f}" for x in rates[label])
        print(
            f"{label:24} median {v:6.2f} tok/s  {ratios[label]:5.2f}x the engine alone (paired by round)   runs: {runs}"
        )
