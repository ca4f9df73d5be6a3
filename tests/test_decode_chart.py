"""The Decode chart is empty until the reply has rates to draw, then draws them."""

import pytest
from ui_helpers import fake_app, text_of, wait_for

from chat.widgets.decode_panel import DecodePanel
from chat.widgets.prompt_input import PromptInput
from model.runtime.events import TokenGenerated

BARS = set("▂▃▄▅▆▇█")


@pytest.mark.asyncio
async def test_decode_chart_is_empty_until_the_first_token():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        chart = app.query_one("#decode-chart")
        assert not BARS & set(text_of(chart)), text_of(chart)  # nothing yet: a baseline only

        engine = holder["engine"]
        engine.turn_gate.clear()  # hold the turn before its second token
        app.query_one(PromptInput).insert("What is the capital of France?")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(engine.turn_requests) == 1 and app.chat.busy)
        await pilot.pause(0.3)
        assert not BARS & set(text_of(chart)), text_of(chart)  # still no rate to draw

        engine.turn_gate.set()
        await wait_for(pilot, lambda: not app.chat.busy)
        await pilot.pause(0.1)
        rates = [e.live_tok_s for e in engine.turns[0] if isinstance(e, TokenGenerated) and e.live_tok_s]
        assert app.query_one(DecodePanel).rates == rates
        assert BARS & set(text_of(chart))  # the reply's rates, drawn
