"""Layout snapshots at 80x24 and 140x45, after one recorded real turn (pytest-textual-snapshot)."""

import pytest
from ui_helpers import fake_app, wait_for

from chat.widgets.confidence import ConfidenceText
from chat.widgets.reply_message import AssistantMessage


async def after_one_turn(pilot):
    app = pilot.app
    app.query_one("#prompt").cursor_blink = False  # a blinking cursor makes snapshots flaky
    await wait_for(pilot, lambda: app.chat.ready)
    app.query_one("#prompt").insert("What is the capital of France?")
    await pilot.press("enter")
    await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", [(80, 24), (140, 45)])
def test_layout(snap_compare, size):
    app, _ = fake_app()
    assert snap_compare(app, terminal_size=size, run_before=after_one_turn)


def test_cache_grid_view(snap_compare):
    """The KV cache grid (F6) after a long recorded reply that evicted."""
    app, holder = fake_app()

    async def two_turns(pilot):
        await after_one_turn(pilot)
        await pilot.press("f6")
        pilot.app.query_one("#prompt").insert("Tell me a story.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not pilot.app.chat.busy and len(holder["engine"].turn_requests) == 2)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(140, 50), run_before=two_turns)


async def long_reply_with(pilot, keys: list[str], focus_after: str = ""):
    """Open views with `keys`, then play the recorded long reply (real watched steps from the model)."""
    app = pilot.app
    app.query_one("#prompt").cursor_blink = False
    await wait_for(pilot, lambda: app.chat.ready)
    engine = app.engine
    engine.skip_recording()  # the long reply
    for key in keys:
        if key.startswith("#"):  # focus a widget, as Tab or a click would
            app.query_one(key).focus()
        else:
            await pilot.press(key)
    app.query_one("#prompt").focus()
    app.query_one("#prompt").insert("Tell me a story.")
    await pilot.press("enter")
    await wait_for(pilot, lambda: len(engine.turn_requests) == 1 and not app.chat.busy)
    if focus_after:
        app.query_one(focus_after).focus()
        await pilot.press("right", "right", "right")
    await pilot.pause(0.3)


def test_attention_view(snap_compare):
    """F7: layer 15's attention over the cache, head by head, for the last watched step."""
    app, _ = fake_app()

    async def run(pilot):
        await pilot.app.query_one("#prefill").remove()  # room for the heads at this size
        await long_reply_with(pilot, ["f5", "f7", "#attention", "h"])

    assert snap_compare(app, terminal_size=(140, 45), run_before=run)


def test_lens_view(snap_compare):
    """F8: each layer's top guess for the last watched step."""
    app, _ = fake_app()
    assert snap_compare(app, terminal_size=(140, 45), run_before=lambda pilot: long_reply_with(pilot, ["f5", "f8"]))


def test_confidence_view(snap_compare):
    """F9: the reply tinted by each token's sampled probability, the cursor on the third token."""
    app, _ = fake_app()
    assert snap_compare(
        app,
        terminal_size=(140, 45),
        run_before=lambda pilot: long_reply_with(pilot, ["f9"], focus_after="ConfidenceText"),
    )


async def fork_picked(pilot, enter: bool):
    """F9, the cursor on the recorded reply's fourth token and ↓ to its third candidate; Enter forks there."""
    app = pilot.app
    await after_one_turn(pilot)
    await pilot.press("f9")
    app.query_one(ConfidenceText).focus()
    await pilot.press("right", "right", "right", "down")
    if enter:
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.busy and 2 in app.conversation.tree.turns)
        app.query_one(ConfidenceText).focus()  # the forked reply, its cursor on the forced token
        await pilot.press("right", "right", "right")
    await pilot.pause(0.2)


def test_fork_picker(snap_compare):
    """F9 on a reply: a token's top-k, the pick that Enter would force there."""
    app, _ = fake_app()
    assert snap_compare(app, terminal_size=(140, 45), run_before=lambda pilot: fork_picked(pilot, enter=False))


def test_branch_arrows_after_a_fork(snap_compare):
    """After the fork: the new reply (its start kept, the pick forced), ‹ 2/2 › under the message."""
    app, _ = fake_app()
    assert snap_compare(app, terminal_size=(140, 45), run_before=lambda pilot: fork_picked(pilot, enter=True))
