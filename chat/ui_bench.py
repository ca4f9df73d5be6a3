"""Decode speed through the Textual app (headless, driven by Pilot) against the engine alone.

The engine thread and the UI share one Python process (and its GIL), so a UI
that redraws too much per token slows decoding down. This measures the same
greedy reply, same prompt, in the same run: the engine alone, the app with
its default panels, with every panel hidden, and with every view shown.
"""

import asyncio
import json
import sys
from dataclasses import replace

from model.engine import EngineOptions

from .app import GlasschatApp
from .headless import HeadlessSession

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def engine_alone(options: EngineOptions) -> float:
    session = HeadlessSession(options)
    try:
        return session.turn(PROMPT).ended.stats.decode_tok_s
    finally:
        session.close()


async def through_app(options: EngineOptions, panels: dict) -> float:
    app = GlasschatApp(options)
    async with app.run_test(size=(160, 50)) as pilot:
        while not app.ready:
            await pilot.pause(0.1)
        for name, shown in panels.items():
            if app.query_one(f"#{name}").display != shown:
                app.action_toggle_panel(name)
        app.query_one("#prompt").insert(PROMPT)
        await pilot.press("enter")
        while not app.busy:
            await pilot.pause(0.05)
        while app.busy:
            await pilot.pause(0.1)
        # The engine's own figure for the turn, as the app received it in TurnEnded.
        return app.last_decode_tok_s


def run(args) -> int:
    options = EngineOptions(model=args.model, max_tokens=args.decode_tokens)
    names = ("prefill", "decode", "cache", "topk", "grid")
    layouts = {
        "app, default panels": {"grid": False},
        "app, every panel hidden": {n: False for n in names},
        "app, every view shown": {n: True for n in names},
    }
    rates = {"engine alone": engine_alone(options)}
    print(f"engine alone: {rates['engine alone']:.2f} tok/s", file=sys.stderr, flush=True)
    for label, panels in layouts.items():
        rates[label] = asyncio.run(through_app(options, panels))
        print(f"{label}: {rates[label]:.2f} tok/s", file=sys.stderr, flush=True)
    rates["engine alone (again)"] = engine_alone(options)
    base = (rates["engine alone"] + rates["engine alone (again)"]) / 2
    report = {"decode_tok_s": rates, "ratio_to_engine": {k: v / base for k, v in rates.items()}}
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in rates.items():
            print(f"{k:28} {v:6.2f} tok/s  {v / base:5.2f}x the engine alone")
    return 0
