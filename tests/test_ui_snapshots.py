"""Layout snapshots at 80x24 and 140x45, after one recorded real turn (pytest-textual-snapshot)."""

import pytest

from chat.widgets.transcript import AssistantMessage

from ui_helpers import fake_app, wait_for


async def after_one_turn(pilot):
    app = pilot.app
    app.query_one("#prompt").cursor_blink = False  # a blinking cursor makes snapshots flaky
    await wait_for(pilot, lambda: app.ready)
    app.query_one("#prompt").insert("What is the capital of France?")
    await pilot.press("enter")
    await wait_for(pilot, lambda: not app.busy and app.query(AssistantMessage))
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
        await wait_for(pilot, lambda: not pilot.app.busy and len(holder["engine"].sent) == 2)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(140, 50), run_before=two_turns)
