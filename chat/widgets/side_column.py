"""The column of views beside the transcript: it scrolls, and says which views are out of sight.

With every view open the column is taller than a 45-row terminal (about 70
rows of panels). Rather than squeeze each view below what it needs to teach,
the column scrolls, and a marker pinned to its top or bottom edge names the
views above or below the fold, so nothing is hidden without a sign. Opening a
view does not scroll the column: what the user was watching stays put, and the
marker names the new view if it landed out of sight. A click on a marker
brings the nearest view past it into sight (the mouse wheel scrolls too).
"""

from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static


class FoldMarker(Static):
    """One row at an edge of the column: which views are past it. A click brings the nearest one into sight."""

    DEFAULT_CSS = """
    FoldMarker {
        height: 1;
        width: 1fr;
        padding: 0 1;
        background: $accent 30%;
        color: $text;
        text-style: bold;
        display: none;
    }
    FoldMarker:hover { background: $accent 50%; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.views: list = []  # the views past this edge, nearest first

    def on_click(self) -> None:
        if self.views:
            self.parent.scroller.scroll_to_widget(self.views[0], animate=False)


class SideColumn(Vertical):
    DEFAULT_CSS = """
    SideColumn { width: 49; height: 1fr; }
    /* A stable gutter: a scrollbar that comes and goes would change every panel's width. */
    SideColumn > VerticalScroll { height: 1fr; scrollbar-size-vertical: 1; scrollbar-gutter: stable; }
    """

    def __init__(self, *views, **kwargs):
        # The markers sit outside the scrolling part, so they never cover a view.
        self.above = FoldMarker(classes="above")
        self.below = FoldMarker(classes="below")
        self.scroller = VerticalScroll(*views)
        super().__init__(self.above, self.scroller, self.below, **kwargs)

    def on_mount(self) -> None:
        self.watch(self.scroller, "scroll_y", self.update_markers, init=False)
        self.watch(self.scroller, "virtual_size", lambda: self.call_after_refresh(self.update_markers), init=False)

    def on_resize(self) -> None:
        self.call_after_refresh(self.update_markers)

    def views(self) -> list:
        return [view for view in self.scroller.children if view.display]

    def out_of_sight(self, above_shown: bool, below_shown: bool) -> tuple[list, list]:
        """The shown views with content rows above and below what the column shows, nearest first."""
        top = round(self.scroller.scroll_y)
        bottom = top + self.content_region.height - above_shown - below_shown
        above, below = [], []
        for view in self.views():
            # Only rows with content count: a view whose border alone is cut off is in sight.
            region, gutter = view.virtual_region, view.styles.gutter
            if region.y + gutter.top < top:
                above.insert(0, view)
            if region.bottom - gutter.bottom > bottom:
                below.append(view)
        return above, below

    def update_markers(self) -> None:
        if not self.is_attached or not self.content_region.height:
            return
        shown = (False, False)
        for _ in range(3):  # a marker takes a row from the views, which can hide one more
            above, below = self.out_of_sight(*shown)
            if (bool(above), bool(below)) == shown:
                break
            shown = (bool(above), bool(below))
        for marker, views, text in ((self.above, above, "▲ above: "), (self.below, below, "▼ below: ")):
            marker.views = views
            marker.display = bool(views)
            if views:
                # Top to bottom, as the column lists them.
                names = [str(view.border_title or view.id) for view in sorted(views, key=lambda v: v.virtual_region.y)]
                marker.update(text + " · ".join(names))
