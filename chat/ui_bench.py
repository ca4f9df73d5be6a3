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

import asyncio
import json
import statistics
import sys

from model.runtime.engine import EngineOptions

from .app import VIEWS, GlasschatApp
from .headless import HeadlessSession
from .widgets.transcript import AssistantMessage

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."

SETTINGS = {
    "app, default panels": {},
    "app, every view hidden": {v: False for v in VIEWS},
    "app, every view shown": {v: True for v in VIEWS},
}


def engine_alone(options: EngineOptions) -> float:
    session = HeadlessSession(options)
    try:
        return session.turn(PROMPT).ended.stats.decode_tok_s
    finally:
        session.close()


async def through_app(options: EngineOptions, views: dict) -> float:
    app = GlasschatApp(options)
    async with app.run_test(size=(160, 50)) as pilot:
        while not app.ready:
            await pilot.pause(0.1)
        for name, shown in views.items():
            if name == "confidence":
                if app.confidence != shown:
                    await app.action_toggle_confidence()
            elif app.query_one(f"#{name}").display != shown:
                app.action_toggle_panel(name)
        app.query_one("#prompt").insert(PROMPT)
        app.query_one("#prompt").focus()
        await pilot.press("enter")
        # Until the reply has ended (a short one may end before `busy` is ever seen).
        while app.busy or app.reply is not None or not app.query(AssistantMessage):
            await pilot.pause(0.1)
        # The engine's own figure for the turn, as the app received it in TurnEnded.
        return app.last_decode_tok_s


def run(args) -> int:
    options = EngineOptions(model=args.model, max_tokens=args.decode_tokens)
    rounds = max(1, args.rounds)
    rates: dict[str, list[float]] = {"engine alone": [], **{label: [] for label in SETTINGS}}
    for r in range(rounds):
        # Interleaved, and each round in a rotated order, so drift hits every setting alike.
        order = list(rates)
        order = order[r % len(order) :] + order[: r % len(order)]
        for label in order:
            if label == "engine alone":
                rate = engine_alone(options)
            else:
                rate = asyncio.run(through_app(options, SETTINGS[label]))
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
    if args.json:
        print(json.dumps(report))
    else:
        for label, v in medians.items():
            runs = " ".join(f"{x:.2f}" for x in rates[label])
            print(
                f"{label:24} median {v:6.2f} tok/s  {ratios[label]:5.2f}x the engine alone (paired by round)"
                f"   runs: {runs}"
            )
    return 0
