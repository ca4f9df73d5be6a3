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

With `--per-view`, each view is measured alone too (every other view hidden),
and each view that asks the engine for something per step (`ViewSpec.needs`)
once more on the engine alone, told those needs as the app would tell it: that
run's cost is the engine-side work (top-k, a watched step's probe and
readouts), and what the app run costs beyond it is UI work (events, redraws).
"""

import argparse
import asyncio
import statistics
import sys

from bench.report import finish
from model.internals.needs import StepNeeds
from model.runtime.headless import HeadlessSession
from model.runtime.settings import EngineOptions

from . import views
from .app import GlasschatApp
from .widgets.reply_message import AssistantMessage

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


ENGINE = "engine alone"


def settings(per_view: bool = False) -> dict[str, dict[str, bool]]:
    """Each app setting measured: which views it opens or closes (every view in the table of views)."""
    measured = {
        "app, default panels": {},
        "app, every view hidden": {spec.id: False for spec in views.VIEWS},
        "app, every view shown": {spec.id: True for spec in views.VIEWS},
    }
    if per_view:
        for spec in views.VIEWS:
            measured[f"app, {spec.id} alone"] = {other.id: other.id == spec.id for other in views.VIEWS}
    return measured


def engine_needs(options: EngineOptions) -> dict[str, StepNeeds]:
    """Per view that asks the engine for something each step: what the app tells the engine while it alone is open."""
    asked = {}
    for spec in views.VIEWS:
        needs = spec.needs(spec.build() if spec.place == "sidebar" else None)
        if needs != StepNeeds():
            top_k = options.top_k_shown if needs.top_k else 0  # as the chat screen's tell_engine asks
            asked[f"engine, {spec.id}'s needs"] = StepNeeds(
                top_k=top_k, attention_layer=needs.attention_layer, lens_layers=needs.lens_layers
            )
    return asked


def engine_alone(options: EngineOptions, needs: StepNeeds = StepNeeds()) -> float:
    session = HeadlessSession(options)
    try:
        session.engine.set_needs(needs)
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
        # Until the reply has ended (a short one may end before `busy` is ever seen). A plain sleep,
        # not `pilot.pause`: each pause asks every widget on the screen for a round trip and then
        # forces a screen refresh, work the app never does by itself (with every view hidden, the UI
        # thread's CPU per redraw interval: 18 ms with pauses at 10 Hz, 12 ms without; 200 tokens, load 4).
        while chat.busy or chat.transcript.reply is not None or not app.query(AssistantMessage):
            await asyncio.sleep(0.1)
        # The engine's own figure for the turn, as the app received it in TurnEnded.
        return chat.status.decode_tok_s


def run(args: argparse.Namespace) -> int:
    options = EngineOptions(model=args.model, max_tokens=args.decode_tokens)
    rounds = max(1, args.rounds)
    per_view = getattr(args, "per_view", False)
    measured = settings(per_view)
    on_engine = engine_needs(options) if per_view else {}
    rates: dict[str, list[float]] = {ENGINE: [], **{label: [] for label in [*on_engine, *measured]}}
    for r in range(rounds):
        # Interleaved, and each round in a rotated order, so drift hits every setting alike.
        order = list(rates)
        order = order[r % len(order) :] + order[: r % len(order)]
        for label in order:
            if label == ENGINE:
                rate = engine_alone(options)
            elif label in on_engine:
                rate = engine_alone(options, on_engine[label])
            else:
                rate = asyncio.run(through_app(options, measured[label]))
            rates[label].append(rate)
            print(f"round {r + 1}/{rounds}  {label}: {rate:.2f} tok/s", file=sys.stderr, flush=True)
    medians = {label: statistics.median(v) for label, v in rates.items()}
    paired = {label: [a / e for a, e in zip(v, rates[ENGINE])] for label, v in rates.items()}
    ratios = {label: statistics.median(r) for label, r in paired.items()}
    report = {
        "decode_tok_s": rates,
        "median_tok_s": medians,
        "paired_ratios": paired,
        "ratio_to_engine": ratios,
        "rounds": rounds,
        "decode_tokens": args.decode_tokens,
    }
    if per_view:
        report["per_view"] = cost_table(ratios)
    return finish(report, args.json, print_report)


def cost_table(ratios: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per view: its cost as a fraction of the engine's speed, split into engine-side and UI work.

    total = 1 - (app, the view alone)/(engine alone); engine = 1 - (engine told its needs)/(engine
    alone), 0 for a view that asks nothing; UI = total - engine. Medians of paired ratios, so the
    parts need not add up to a run's; the hidden app's own cost is the baseline every view pays."""
    table = {}
    for spec in views.VIEWS:
        total = 1 - ratios[f"app, {spec.id} alone"]
        engine = 1 - ratios.get(f"engine, {spec.id}'s needs", 1.0)
        table[spec.id] = {"total": total, "engine": engine, "ui": total - engine}
    return table


def print_report(report: dict) -> None:
    rates, ratios = report["decode_tok_s"], report["ratio_to_engine"]
    for label, v in report["median_tok_s"].items():
        runs = " ".join(f"{x:.2f}" for x in rates[label])
        print(
            f"{label:24} median {v:6.2f} tok/s  {ratios[label]:5.2f}x the engine alone (paired by round)   runs: {runs}"
        )
    if "per_view" in report:
        print("cost per view, alone (1 - ratio to the engine alone; the hidden app's cost included in each):")
        print(f"{'view':12} {'total':>7} {'engine':>7} {'UI':>7}")
        for view_id, cost in report["per_view"].items():
            print(f"{view_id:12} {cost['total']:7.1%} {cost['engine']:7.1%} {cost['ui']:7.1%}")
