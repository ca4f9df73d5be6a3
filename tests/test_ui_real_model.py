"""One Pilot run on the real default model: a question, the reply, and the panels showing the engine's numbers."""

import pytest
from ui_helpers import text_of, wait_for

from chat.app import GlasschatApp
from chat.formatting import human_bytes, rate, seconds
from chat.widgets.transcript import AssistantMessage
from model.runtime.engine import Engine
from model.runtime.events import PrefillDone, TokenGenerated, TurnEnded
from model.runtime.settings import EngineOptions


@pytest.mark.asyncio
async def test_real_model_end_to_end():
    seen = []

    def recording_engine(options, emit):
        def tee(event):
            seen.append(event)
            emit(event)

        return Engine(options, tee)

    app = GlasschatApp(EngineOptions(max_tokens=32), engine_factory=recording_engine)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready, timeout=120)
        app.query_one("#prompt").insert("What is the capital of France?")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(isinstance(e, TurnEnded) for e in seen) and not app.chat.busy, timeout=120)
        await pilot.pause(0.3)

        ended = next(e for e in seen if isinstance(e, TurnEnded))
        prefill = next(e for e in seen if isinstance(e, PrefillDone)).stats
        last = [e for e in seen if isinstance(e, TokenGenerated)][-1]
        assert "Paris" in app.query_one(AssistantMessage).text == ended.text

        assert rate(prefill.prefill_tok_s) in text_of(app.chat.panels["prefill"])
        assert seconds(prefill.prefill_s) in text_of(app.chat.panels["prefill"])
        assert rate(ended.stats.decode_tok_s) in text_of(app.query_one("#decode-numbers"))
        cache_text = text_of(app.chat.panels["cache"])
        assert f"held {ended.cache.tokens} / {ended.cache.capacity} tokens" in cache_text
        assert human_bytes(ended.cache.bytes) in cache_text and ended.cache.bytes > 0
        topk_text = text_of(app.chat.panels["topk"])
        assert f"{last.top_k[0].prob * 100:5.1f}%" in topk_text
        assert ended.stats.decode_tok_s > 0 and prefill.prefill_tok_s > 0
