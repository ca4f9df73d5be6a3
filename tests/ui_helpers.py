"""Helpers for Pilot tests: build the app on a fake engine, wait for conditions, read panels as text."""

import asyncio

from fake_engine import FakeEngine
from textual.geometry import Region

from chat.app import GlasschatApp
from model.runtime.settings import EngineOptions


def fake_app(
    delay=0.0, tokenizer=None, recorder=None, settings_file=None, download=None, recording=None, gate_at=1, **options
):
    """The app on a FakeEngine; pass a real tokenizer for views that show tokens, `download` for a fake Hub,
    `recording` for another conversation's events (see tests/event_codec.py)."""
    holder = {}
    replayed = {"recording": recording} if recording is not None else {}

    def factory(opts, emit):
        holder["engine"] = FakeEngine(opts, emit, delay=delay, download=download, gate_at=gate_at, **replayed)
        holder["engine"].lent_tokenizer = tokenizer
        return holder["engine"]

    app = GlasschatApp(EngineOptions(**options), engine_factory=factory, recorder=recorder, settings_file=settings_file)
    return app, holder


def asked(app) -> list[str]:
    """Every message the app has asked the engine to answer (a branch's included), oldest first."""
    conversation = app.conversation
    turns = dict(conversation.tree.turns)
    if conversation.pending is not None:
        turns[conversation.pending.turn_id] = conversation.pending
    return [turns[n].user for n in sorted(turns)]


async def wait_for(pilot, condition, timeout=20.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            raise AssertionError(
                f"timed out waiting for the UI (busy={pilot.app.chat.busy}, queue={len(pilot.app.chat.queue)})"
            )
        await pilot.pause(0.02)


def text_of(widget, width=None) -> str:
    """What a widget shows on screen right now, as plain text (borders included)."""
    region = Region(0, 0, widget.outer_size.width, widget.outer_size.height)
    return "\n".join(strip.text for strip in widget.render_lines(region))


def screen_text(app) -> list[str]:
    """Every row of the screen as plain text, as a terminal would show it."""
    return [strip.text for strip in app.screen._compositor.render_strips()]
