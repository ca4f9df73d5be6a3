"""↑/↓ in the prompt box: this conversation's messages, then older saved ones, and the draft kept."""

import pytest
from ui_helpers import fake_app, wait_for

from chat.recorder import ConversationRecorder
from chat.store import Store
from chat.widgets.prompt_input import PromptInput
from chat.widgets.transcript import AssistantMessage


async def send(pilot, text):
    app = pilot.app
    replies = len(app.query(AssistantMessage))
    app.query_one(PromptInput).insert(text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: not app.chat.busy and len(app.query(AssistantMessage)) == replies + 1)


@pytest.mark.asyncio
async def test_up_and_down_walk_the_history_and_keep_the_draft(tmp_path):
    store = Store(tmp_path / "g.db")
    older = store.new_conversation("m", None, {})
    store.add_message(older, "user", "an old question")
    store.add_message(older, "user", "a newer old question")
    app, _ = fake_app(recorder=ConversationRecorder(store, "m", {}))
    async with app.run_test(size=(140, 45)) as pilot:
        prompt = app.query_one(PromptInput)
        await wait_for(pilot, lambda: app.chat.ready)
        await send(pilot, "first")
        await send(pilot, "second")
        await send(pilot, "first")  # asked again: one step back, not two

        prompt.insert("a draft in prog")
        seen = []
        for _ in range(5):
            await pilot.press("up")
            seen.append(prompt.text)
        assert seen == ["first", "second", "a newer old question", "an old question", "an old question"]
        for _ in range(4):
            await pilot.press("down")
            seen.append(prompt.text)
        assert seen[5:] == ["a newer old question", "second", "first", "a draft in prog"]
        await pilot.press("down")  # past the draft: nothing more
        assert prompt.text == "a draft in prog"

        # In a draft of two lines, ↑ on the second line moves the cursor; on the first it recalls.
        prompt.insert("\nline two")
        await pilot.press("up")
        assert prompt.text == "a draft in prog\nline two" and prompt.cursor_location[0] == 0
        await pilot.press("up")
        assert prompt.text == "first"
        await pilot.press("down")
        assert prompt.text == "a draft in prog\nline two"

        # A new conversation starts its own history; the last one's messages are now saved, older ones.
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: not app.query(AssistantMessage))
        await pilot.press("up")
        assert prompt.text == "a draft in prog\nline two"  # cursor is on the last line: it moved up
        await pilot.press("up")
        assert prompt.text == "first"
