"""Engine events to the widgets that draw them: every event in order as it arrives, decode steps paced.

Reply text and panels are drawn together, 2 to 5 times a second as the pacer finds
affordable: the UI shares the CPU and the GIL with the engine, and each Markdown
append and layout pass costs tens of ms. A newer step supersedes one that was never
drawn (the views that need every step, like the decode chart, keep it as it
arrives). The heavy views (the grid, the tinted reply) redraw every other time,
and the inside views when a watched step arrives (at most 2.5 Hz): with every view
open, redraws are most of the UI's CPU. A hidden view is not drawn at all.
"""

from collections.abc import Sequence

from textual.screen import Screen

from model.runtime.events import ClusterStep, Event, InsideStep, TokenGenerated

from .draw_pacer import DrawPacer
from .engine_view import EngineView

PACED = (TokenGenerated, InsideStep, ClusterStep)  # drawn at the paced redraws, newest first-come


class Router:
    def __init__(self, screen: Screen, receivers: Sequence[EngineView]):
        self.screen = screen
        self.receivers = list(receivers)  # in the order they take each event
        self.pacer = DrawPacer()
        self.pending: dict[type, Event] = {}
        self._armed = False
        self._draws = 0  # paced redraws so far (the heavy views draw every other one)

    async def route(self, event: Event) -> None:
        if not isinstance(event, PACED):
            # The last step's numbers are drawn before whatever followed it (the turn's final ones).
            await self.draw(full=True)
        for receiver in self.receivers:
            await receiver.take(event)
        if isinstance(event, PACED):
            self.pending[type(event)] = event
            if not self._armed:
                self._armed = True
                self.screen.set_timer(self.pacer.interval, self._paced_draw)

    async def _paced_draw(self) -> None:
        self._armed = False
        self.pacer.drew()
        self._draws += 1
        await self.draw(full=self._draws % 2 == 0)

    async def draw(self, full: bool) -> None:
        """Draw what is pending on every shown view, in one screen update."""
        pending, self.pending = self.pending, {}
        if not pending:
            return
        with self.screen.app.batch_update():
            for receiver in self.receivers:
                # Only shown widgets draw (the screen's control takes events but draws nothing).
                if getattr(receiver, "display", False) and receiver.is_attached:
                    for event in pending.values():
                        await receiver.draw(event, full)
