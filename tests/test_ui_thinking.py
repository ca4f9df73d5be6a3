"""A thinking model through the UI: its real events (the scripted tiny thinker), replayed with a pause mid-reply."""

import event_codec
import pytest
from engine_harness import SyncChat
from tiny_models import ANSWER, THOUGHT, write_thinking_folder
from ui_helpers import fake_app, screen_text, text_of, wait_for

from chat.cli import parse_args
from chat.launch import read_settings
from chat.options import engine_options
from chat.widgets.decode_panel import DecodePanel
from chat.widgets.prompt_input import PromptInput
from chat.widgets.thinking_fold import ThinkingFold
from chat.widgets.transcript import AssistantMessage
from chat.widgets.user_message import UserMessage
from model.runtime.events import ModelReady


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("thinker")
    write_thinking_folder(root / "model")
    engine = SyncChat(model=str(root / "model"), max_tokens=12)
    load = [e for e in engine.events if isinstance(e, ModelReady)]
    start = len(engine.events)
    engine.turn("Hello!")
    path = root / "events.json"
    event_codec.save(path, load, [engine.events[start:]])
    return path


@pytest.mark.asyncio
async def test_thinking_is_open_while_it_streams_then_folded_and_counted_apart(recording):
    # Held before the fourth token: <think>, Hmm and </think> are out, the answer is not.
    app, holder = fake_app(recording=recording, gate_at=3)
    async with app.run_test(size=(140, 45)) as pilot:
        app.query_one(PromptInput).cursor_blink = False
        await wait_for(pilot, lambda: app.chat.ready)
        holder["engine"].turn_gate.clear()
        app.query_one(PromptInput).insert("Hello!")
        await pilot.press("enter")

        await wait_for(pilot, lambda: app.query(ThinkingFold) and app.query_one(ThinkingFold).text == THOUGHT)
        fold = app.query_one(ThinkingFold)
        assert not fold.collapsed and fold.title == "Thinking…"
        await pilot.pause(0.1)
        shown = "\n".join(screen_text(app))
        assert "▼ Thinking…" in shown and THOUGHT in shown and not app.query_one(AssistantMessage).text
        await wait_for(pilot, lambda: "thinking 3" in text_of(app.query_one("#decode-split")))

        holder["engine"].turn_gate.set()
        await wait_for(pilot, lambda: not app.chat.busy)
        assert fold.collapsed and fold.title == "Thought for 3 tokens"
        await pilot.pause(0.1)
        shown = "\n".join(screen_text(app))
        assert "▶ Thought for 3 tokens" in shown and THOUGHT not in shown  # folded: the thinking is hidden
        assert app.query_one(AssistantMessage).text == ANSWER  # the answer alone: no markers, no thinking
        assert THOUGHT not in text_of(app.query_one(AssistantMessage))
        panel = app.query_one(DecodePanel)
        assert "thinking 3  answer 3" in text_of(panel.split) and "tokens 6" in text_of(panel.numbers)

        await pilot.click(fold._title)  # unfolds again
        await wait_for(pilot, lambda: not fold.collapsed)


@pytest.mark.asyncio
async def test_a_branch_drawn_again_keeps_its_thinking_folded(recording):
    app, holder = fake_app(recording=recording)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        app.query_one(PromptInput).insert("Hello!")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))
        await pilot.press("ctrl+r")  # a second reply to the same message (the same recording plays)
        tree = app.conversation.tree
        await wait_for(pilot, lambda: not app.chat.busy and 2 in tree.turns)
        app.query_one(UserMessage).focus()
        await pilot.press("left")  # back to the first reply: the path is drawn again from the tree
        await wait_for(pilot, lambda: not app.chat.busy and tree.current == 1)
        await pilot.pause(0.1)
        [fold] = app.query(ThinkingFold)
        assert fold.collapsed and fold.title == "Thought for 3 tokens" and fold.text.strip("\n") == THOUGHT
        assert app.query_one(AssistantMessage).text == ANSWER and THOUGHT not in text_of(
            app.query_one(AssistantMessage)
        )
        assert list(app.query_one("#transcript").children).index(fold) == 1  # between the message and its reply


@pytest.mark.asyncio
async def test_the_palette_turns_thinking_off_for_the_next_message_and_the_next_run(recording, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    app, holder = fake_app(recording=recording, settings_file=read_settings())
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        [command] = [c for c in app.chat.commands() if c.title.startswith("Thinking")]
        assert command.title == "Thinking: turn off" and "enable_thinking" in command.help
        command.callback()
        assert holder["engine"].updates[-1].thinking is False  # asked of the engine; taken once it reports it
        await wait_for(pilot, lambda: app.options.thinking is False)
        [command] = [c for c in app.chat.commands() if c.title.startswith("Thinking")]
        assert command.title == "Thinking: turn on"
    # Saved: the next start of the app does not think either; a flag still wins for one run.
    assert read_settings().settings.thinking == "off"
    assert engine_options(parse_args([])).thinking is False
    assert engine_options(parse_args(["--thinking", "auto"])).thinking is None
