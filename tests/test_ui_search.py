"""Ctrl+O's search field: the hits for what is typed, and Enter opens the conversation at the message found,
on the branch that holds it, scrolled to and highlighted."""

import pytest
from textual.widgets import Input, OptionList
from ui_helpers import fake_app, wait_for

from chat.recorder import ConversationRecorder
from chat.screens.conversations import ConversationsScreen
from chat.store import Store
from chat.widgets.prompt_input import PromptInput
from chat.widgets.reply_message import AssistantMessage
from chat.widgets.user_message import UserMessage
from model.runtime.requests import HoldRequest


def saved_chats(path) -> tuple[Store, dict]:
    """Two conversations; the first long enough to scroll, its last turn on two branches."""
    store = Store(path)
    ids = {}
    other = store.new_conversation("fake", None, {})
    store.add_message(other, "user", "A recipe for bread, please.", parent=None)
    store.add_reply(other, "Flour, water, salt and yeast.", [1], "complete", {}, {})
    long = store.new_conversation("fake", None, {})
    parent = None
    for n in range(12):
        topic = "marmalade" if n == 2 else f"topic number {n}"
        user = store.add_message(long, "user", f"Tell me about {topic}.", parent=parent)
        text = "It is made of Seville oranges.\n\nBoiled with sugar." if n == 2 else f"Reply {n}.\n\nMore."
        parent = store.add_reply(long, text, [n], "complete", {}, {}, parent=user)
        if n == 10:
            ids["branch_point"] = user
    first = store.add_message(long, "user", "Tell me about quinces, first try.", parent=parent)
    ids["quince_reply"] = store.add_reply(long, "Quinces are hard pears.", [5], "complete", {}, {}, parent=first)
    second = store.add_message(long, "user", "Tell me about something else.", parent=parent)
    store.add_reply(long, "Something else.", [6], "complete", {}, {}, parent=second)  # the path shown
    ids["long"] = long
    return store, ids


async def open_search(pilot, words: str) -> ConversationsScreen:
    await pilot.press("ctrl+o")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConversationsScreen))
    await pilot.press("slash")
    assert isinstance(pilot.app.screen.focused, Input)
    await pilot.press(*words)
    return pilot.app.screen


def visible_in(widget, scroller) -> bool:
    top = widget.region.y
    return scroller.region.y <= top < scroller.region.y + scroller.region.height


@pytest.mark.asyncio
async def test_enter_on_a_hit_opens_its_conversation_there(tmp_path):
    store, ids = saved_chats(tmp_path / "g.db")
    app, holder = fake_app()
    app.recorder = ConversationRecorder(store, "fake", {})
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        screen = await open_search(pilot, "seville")
        hits = screen.query_one(OptionList)
        assert hits.option_count == 1
        assert "Seville" in str(hits.get_option_at_index(0).prompt)
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: not app.chat.busy and any(isinstance(r, HoldRequest) for r in holder["engine"].requests)
        )
        await pilot.pause(0.2)
        [found] = app.chat.transcript.query(".found")
        assert isinstance(found, AssistantMessage) and found.text.startswith("It is made of Seville oranges.")
        assert list(app.chat.transcript.query(AssistantMessage)).index(found) == 2
        assert visible_in(found, app.chat.transcript)  # the conversation is 14 turns long: it was scrolled to
        assert not visible_in(app.chat.transcript.query(AssistantMessage).last(), app.chat.transcript)


@pytest.mark.asyncio
async def test_a_short_conversation_opened_at_a_hit_shows_every_message(tmp_path):
    store, _ = saved_chats(tmp_path / "g.db")
    app, holder = fake_app()
    app.recorder = ConversationRecorder(store, "fake", {})
    async with app.run_test(size=(150, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        await open_search(pilot, "yeast")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: not app.chat.busy and any(isinstance(r, HoldRequest) for r in holder["engine"].requests)
        )
        await pilot.pause(0.2)
        [found] = app.chat.transcript.query(".found")
        assert found.text == "Flour, water, salt and yeast."
        for shown in (*app.chat.transcript.query(UserMessage), *app.chat.transcript.query(AssistantMessage)):
            assert visible_in(
                shown, app.chat.transcript
            )  # nothing to scroll: nothing pushed out of view (at 150x45 it was)


@pytest.mark.asyncio
async def test_a_hit_on_a_branch_not_shown_opens_that_branch(tmp_path):
    store, ids = saved_chats(tmp_path / "g.db")
    app, holder = fake_app()
    app.recorder = ConversationRecorder(store, "fake", {})
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        screen = await open_search(pilot, "quince")
        hits = screen.query_one(OptionList)
        assert hits.option_count == 2  # the message and its reply
        await pilot.press("down", "enter")  # the second hit
        await wait_for(
            pilot, lambda: not app.chat.busy and any(isinstance(r, HoldRequest) for r in holder["engine"].requests)
        )
        await pilot.pause(0.2)
        [found] = app.chat.transcript.query(".found")
        shown = [m.text for m in app.chat.transcript.query(UserMessage)]
        assert shown[-1] == "Tell me about quinces, first try."  # the branch with the hit, not the newest one
        assert found in (
            app.chat.transcript.query(UserMessage).last(),
            app.chat.transcript.query(AssistantMessage).last(),
        )
        assert Store(tmp_path / "g.db").current_message(ids["long"]) == ids["quince_reply"]


@pytest.mark.asyncio
async def test_esc_clears_the_search_then_closes(tmp_path):
    store, _ = saved_chats(tmp_path / "g.db")
    app, _ = fake_app()
    app.recorder = ConversationRecorder(store, "fake", {})
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        screen = await open_search(pilot, '"NEAR( -*')  # query syntax, read as words: no hit, no error
        assert screen.query_one(OptionList).option_count == 0
        assert "No saved message" in str(screen.query_one("#search-problem").render())
        await pilot.press("escape")
        assert screen.query_one(Input).value == "" and screen.query_one(OptionList).option_count == 2
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConversationsScreen))


@pytest.mark.asyncio
async def test_a_hit_opens_on_the_real_engine(tmp_path, tiny_chat_model):
    """On the real engine: the path drawn when the conversation opens stays while the cache is brought to it, and
    the screen is free once it is (before the seam the engine started over first, and wiped the path drawn)."""
    from chat.app import GlasschatApp
    from model.runtime.engine import Engine
    from model.runtime.settings import EngineOptions

    store, _ = saved_chats(tmp_path / "g.db")
    app = GlasschatApp(EngineOptions(model=tiny_chat_model, layout="float32", max_tokens=4), engine_factory=Engine)
    app.recorder = ConversationRecorder(store, "tiny", {})
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready, timeout=60)
        await open_search(pilot, "seville")
        await pilot.press("enter")
        notices = lambda: [str(n.render()) for n in app.chat.transcript.query("Notice")]  # noqa: E731
        await wait_for(pilot, lambda: any("Restored" in n for n in notices()), timeout=60)
        await pilot.pause(0.2)
        assert not app.chat.busy and len(app.chat.transcript.query(UserMessage)) == 13
        [found] = app.chat.transcript.query(".found")
        assert found.text.startswith("It is made of Seville oranges.") and visible_in(found, app.chat.transcript)


@pytest.mark.asyncio
async def test_a_hit_opened_while_a_reply_runs_is_marked_once_the_reply_stops(tmp_path):
    """The reopen waits for the reply under way (stopped, and kept): the message is marked when its path is drawn."""
    store, _ = saved_chats(tmp_path / "g.db")
    app, holder = fake_app()
    app.recorder = ConversationRecorder(store, "fake", {})
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        engine = holder["engine"]
        engine.turn_gate.clear()  # the reply holds before its second token
        app.query_one(PromptInput).insert("What is the capital of France?")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(engine.turn_requests) == 1 and app.chat.busy)
        await open_search(pilot, "seville")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConversationsScreen))
        assert not app.chat.transcript.query(".found")  # not yet: the reply is still running
        engine.turn_gate.set()
        await wait_for(pilot, lambda: not app.chat.busy and any(isinstance(r, HoldRequest) for r in engine.requests))
        await pilot.pause(0.2)
        [found] = app.chat.transcript.query(".found")
        assert isinstance(found, AssistantMessage) and found.text.startswith("It is made of Seville oranges.")
        assert visible_in(found, app.chat.transcript)
