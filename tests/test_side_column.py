"""The side column names the views it cannot show, above and below, and keeps the names right as it scrolls."""

import pytest
from textual.app import App
from textual.widgets import Static
from ui_helpers import screen_text

from chat.widgets.side_column import SideColumn

ROWS = 6  # each view: 4 rows of content and its border


class FiveViews(App):
    def compose(self):
        views = []
        for i in range(5):
            view = Static("\n".join(f"view {i} row {j}" for j in range(4)), id=f"v{i}")
            view.border_title = f"View {i}"
            view.styles.border = ("round", "white")
            views.append(view)
        yield SideColumn(*views)


def seen(app):
    """The views whose every content row is on screen, and the marker rows, read off the screen."""
    rows = screen_text(app)
    whole = [i for i in range(5) if all(any(f"view {i} row {j}" in r for r in rows) for j in range(4))]
    return whole, [r.strip() for r in rows if r.strip().startswith(("▲", "▼"))]


@pytest.mark.asyncio
async def test_markers_name_what_is_out_of_sight():
    app = FiveViews()
    async with app.run_test(size=(60, 2 * ROWS + 2)) as pilot:
        column = app.query_one(SideColumn).scroller
        await pilot.pause()
        whole, markers = seen(app)
        assert whole == [0, 1] and markers == ["▼ below: View 2 · View 3 · View 4"]

        # At every scroll position: every view not wholly on screen is named, and no other.
        for y in range(int(column.max_scroll_y) + 1):
            column.scroll_to(y=y, animate=False)
            await pilot.pause()
            whole, markers = seen(app)
            above = [m for m in markers if m.startswith("▲")]
            below = [m for m in markers if m.startswith("▼")]
            named = {int(n) for m in markers for n in m.replace("View ", "").split(": ")[1].split(" · ")}
            assert named == set(range(5)) - set(whole), (y, whole, markers)
            assert len(above) == (whole[0] > 0) and len(below) == (whole[-1] < 4 if whole else 1), (y, markers)

        # A click on a marker brings the nearest view past it into sight.
        column.scroll_home(animate=False)
        await pilot.pause()
        await pilot.click("FoldMarker.below")
        await pilot.pause()
        whole, markers = seen(app)
        assert 2 in whole and markers[0].startswith("▲ above: View 0")
        await pilot.click("FoldMarker.above")
        await pilot.pause()
        assert 0 in seen(app)[0]

        column.scroll_end(animate=False)
        await pilot.pause()
        whole, markers = seen(app)
        assert whole[-1] == 4 and markers == ["▲ above: " + " · ".join(f"View {i}" for i in range(5) if i not in whole)]

        # A column that holds everything says nothing.
        for i in (1, 2, 3):
            app.query_one(f"#v{i}").display = False
        await pilot.pause()
        await pilot.pause()
        assert seen(app) == ([0, 4], [])
