"""Layout snapshots at 80x24 and 140x45, after one recorded real turn (pytest-textual-snapshot)."""

import pytest

from chat.widgets.transcript import AssistantMessage

from ui_helpers import fake_app, wait_for


async def after_one_turn(pilot):
    app = pilot.app
    await wait_for(pilot, lambda: app.ready)
    app.query_one("#prompt").insert("What is the capital of France?")
    await pilot.press("enter")
    await wait_for(pilot, lambda: not app.busy and app.query(AssistantMessage))
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", [(80, 24), (140, 45)])
def test_layout(snap_compare, size):
    app, _ = fake_app()
    assert snap_compare(app, terminal_size=size, run_before=after_one_turn)
