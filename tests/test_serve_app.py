"""`glasschat --serve`: OpenAI's client against the app run headless (Textual's run_test) on the real engine.

The tiny random model speaks the default model's tokenizer and template; what is checked is
where a request goes: into the transcript as a conversation of its own, on the app's tree
and in its store, through the same queue as typed messages, reusing the cache as turns do.
"""

import asyncio
import threading

import openai
import pytest
from test_ui import send
from ui_helpers import text_of, wait_for

from chat.api.app_server import AppServer
from chat.api.server import listen
from chat.app import GlasschatApp
from chat.recorder import ConversationRecorder
from chat.store import Store
from chat.widgets.transcript import AssistantMessage, Notice
from chat.widgets.user_message import UserMessage
from model.runtime.engine import Engine
from model.runtime.events import TokenGenerated, TurnEnded, TurnStarted
from model.runtime.settings import EngineOptions

FIRST, NEXT = "Tell me something.", "Go on."


def serving_app(model: str, db, max_tokens: int, gate: threading.Event = None):
    """The app serving on a free port; with `gate`, the engine waits at turn 1's first token until it is set."""
    seen = []

    def factory(options, emit):
        def tee(event):
            seen.append(event)
            emit(event)
            if gate is not None and isinstance(event, TokenGenerated) and event.turn_id == 1:
                gate.wait(60)

        return Engine(options, tee)

    app = GlasschatApp(EngineOptions(model=model, layout="float32", max_tokens=max_tokens), engine_factory=factory)
    app.recorder = ConversationRecorder(Store(db), "tiny", {})
    app.server = AppServer(app, listen("127.0.0.1", 0), "tiny", api_key=None, waiting=4)
    return app, seen


def ask(app, messages, **kwargs):
    """A request through OpenAI's client, on a thread of its own so the app's loop goes on."""
    client = openai.OpenAI(base_url=app.server.url, api_key="unused", max_retries=0, timeout=120)
    return asyncio.to_thread(client.chat.completions.create, model="tiny", messages=messages, **kwargs)


def shown(app) -> list[tuple[str, str]]:
    return [
        ("user" if isinstance(w, UserMessage) else "assistant", w.text)
        for w in app.chat.transcript.children
        if isinstance(w, (UserMessage, AssistantMessage))
    ]


@pytest.mark.asyncio
async def test_a_request_is_a_conversation_in_the_app_and_an_extension_reuses_the_cache(tiny_chat_model, tmp_path):
    app, seen = serving_app(tiny_chat_model, tmp_path / "g.db", max_tokens=8)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready, timeout=60)
        first = await ask(app, [{"role": "user", "content": FIRST}], user="tester", logprobs=True, top_logprobs=3)
        await wait_for(pilot, lambda: not app.chat.busy)
        said = first.choices[0].message.content
        assert shown(app) == [("user", FIRST), ("assistant", said)]
        notices = [text_of(n) for n in app.chat.transcript.query(Notice)]
        assert any("API request from tester" in n for n in notices), notices
        ended = [e for e in seen if isinstance(e, TurnEnded)]
        assert len(ended) == 1 and ended[0].text == said and len(first.choices[0].logprobs.content[0].top_logprobs) == 3
        assert first.usage.prompt_tokens_details.cached_tokens == 0

        history = [{"role": "user", "content": FIRST}, {"role": "assistant", "content": said}]
        second = await ask(app, [*history, {"role": "user", "content": NEXT}])
        await wait_for(pilot, lambda: not app.chat.busy)
        again = second.choices[0].message.content
        assert shown(app) == [("user", FIRST), ("assistant", said), ("user", NEXT), ("assistant", again)]
        started = [e for e in seen if isinstance(e, TurnStarted)][-1]
        assert second.usage.prompt_tokens_details.cached_tokens == started.reused_tokens > len(ended[0].reply_ids)
        # Its own conversation, saved marked as served, the history first and then the turn.
        listed = app.recorder.store.conversations()
        assert [c.title for c in listed][:2] == ["served: " + FIRST, "served to tester: " + FIRST]
        saved = app.recorder.store.messages(listed[0].id)
        assert [(m.role, m.content) for m in saved] == [
            ("user", FIRST),
            ("assistant", said),
            ("user", NEXT),
            ("assistant", again),
        ]


@pytest.mark.asyncio
async def test_a_request_waits_behind_a_typed_message_in_the_same_queue(tiny_chat_model, tmp_path):
    gate = threading.Event()
    app, seen = serving_app(tiny_chat_model, tmp_path / "g.db", max_tokens=8, gate=gate)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready, timeout=60)
        await send(pilot, "A typed message.")
        await wait_for(pilot, lambda: any(isinstance(e, TokenGenerated) for e in seen))  # held at its first token
        request = asyncio.ensure_future(ask(app, [{"role": "user", "content": FIRST}], max_tokens=4))
        await wait_for(pilot, lambda: len(app.chat.queue) == 1)  # waits where a typed message would
        assert app.chat.busy and not request.done()
        gate.set()
        reply = await request
        await wait_for(pilot, lambda: not app.chat.busy)
        ended = [e for e in seen if isinstance(e, TurnEnded)]
        assert [e.turn_id for e in ended] == [1, 2]
        assert ended[1].text == reply.choices[0].message.content
        assert shown(app)[0] == ("user", FIRST)  # the request's own conversation, in place of the typed one
        assert reply.usage.completion_tokens == ended[1].stats.generated_tokens <= 4


@pytest.mark.asyncio
async def test_a_request_waiting_when_the_app_closes_is_refused_and_never_drawn(tiny_chat_model, tmp_path):
    gate = threading.Event()
    app, seen = serving_app(tiny_chat_model, tmp_path / "g.db", max_tokens=8, gate=gate)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready, timeout=60)
        await send(pilot, "A typed message.")
        await wait_for(pilot, lambda: any(isinstance(e, TokenGenerated) for e in seen))
        request = asyncio.ensure_future(ask(app, [{"role": "user", "content": FIRST}]))
        await wait_for(pilot, lambda: len(app.chat.queue) == 1)
        app.server.backend.close()  # what closing the app does first
        with pytest.raises(openai.BadRequestError, match="closing"):
            await asyncio.wait_for(request, 10)
        gate.set()
        await wait_for(pilot, lambda: not app.chat.busy and not app.chat.queue)
        assert [e.turn_id for e in seen if isinstance(e, TurnEnded)] == [1]  # the withdrawn request never ran
        assert shown(app)[0] == ("user", "A typed message.")
