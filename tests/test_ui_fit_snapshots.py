"""Snapshots of the first screen, and of every view open at 140x45 and 120x40 (the side column's fold marker)."""

import pytest
from test_ui_snapshots import long_reply_with
from ui_helpers import fake_app, wait_for

from chat.widgets.welcome import Welcome

EVERY_VIEW = ["f6", "f7", "f8", "f9"]  # F2-F5 are open from the start


async def welcome(pilot):
    app = pilot.app
    app.query_one("#prompt").cursor_blink = False  # a blinking cursor makes snapshots flaky
    await wait_for(pilot, lambda: app.chat.ready and app.query(Welcome))
    await pilot.pause(0.2)


def test_welcome(snap_compare):
    """The first screen: the model, where it runs, three examples, and the keys to know."""
    app, _ = fake_app()
    assert snap_compare(app, terminal_size=(140, 45), run_before=welcome)


@pytest.mark.parametrize("size", [(140, 45), (120, 40)])
def test_every_view_open(snap_compare, size):
    """Every view open after the recorded long reply: what does not fit is named at the column's edge."""
    app, _ = fake_app()
    assert snap_compare(app, terminal_size=size, run_before=lambda pilot: long_reply_with(pilot, EVERY_VIEW))
