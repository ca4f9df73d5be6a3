"""The first screen: the model, three examples to pick by key or click, and where to look next."""

import pytest
from ui_helpers import asked, fake_app, screen_text, wait_for

from chat.widgets.prompt_input import PromptInput
from chat.widgets.transcript import AssistantMessage, UserMessage
from chat.widgets.welcome import EXAMPLES, Example, Welcome


async def ready(pilot):
    app = pilot.app
    app.query_one(PromptInput).cursor_blink = False
    await wait_for(pilot, lambda: app.chat.ready and app.query(Welcome))
    await pilot.pause(0.1)


@pytest.mark.asyncio
async def test_welcome_names_the_model_and_an_example_is_picked_by_its_number():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await ready(pilot)
        info = holder["engine"].load_events[-1].info
        shown = "\n".join(screen_text(app))
        assert "SmolLM2-135M-Instruct Q4_1" in shown and f"{info['parameters'] / 1e6:.0f}M parameters" in shown
        assert "on the CPU with OpenBLAS (system)" in shown
        for example in EXAMPLES:
            assert example in shown
        for key in ("F1", "F6–F9", "Ctrl+L", "Ctrl+P"):
            assert key in shown

        await pilot.press("2", "enter")
        await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))
        assert asked(app) == [EXAMPLES[1]]
        assert app.query_one(UserMessage).text == EXAMPLES[1]
        assert not app.query(Welcome)  # gone with the first message

        # A digit is a digit once the conversation has begun.
        await pilot.press("2", "enter")
        await wait_for(pilot, lambda: not app.chat.busy and len(app.query(AssistantMessage)) == 2)
        assert asked(app)[-1] == "2"

        await pilot.press("ctrl+n")  # a new conversation: the welcome is back
        await wait_for(pilot, lambda: app.query(Welcome) and not app.query(AssistantMessage))


@pytest.mark.asyncio
async def test_an_example_is_picked_by_a_click():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await ready(pilot)
        await pilot.click(list(app.query(Example))[0])
        await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))
        assert asked(app) == [EXAMPLES[0]]
        assert not app.query(Welcome)
