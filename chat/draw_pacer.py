"""How often the app redraws during a reply: as often as it can while its own CPU stays in budget.

The UI and the engine share the machine. On a small CPU (two cores here, both
busy with OpenBLAS during decode) every millisecond the UI thread spends
drawing is taken from the engine, and Textual's layout and compositing cost
tens of ms per redraw. The pacer measures the UI thread's own CPU time
between redraws and stretches the interval until that share of one core is
within budget; on a fast machine it stays at the highest rate.
"""

import time
from collections.abc import Callable

MAX_HZ = 5.0  # text and panels: more often than this is not needed to read along
MIN_HZ = 2.0  # never slower: the panels must still look live
# The UI thread's share of one core while a reply runs. At 8% the app with every view hidden
# cost decode about 7% (bench --ui): on 2 busy cores the UI's CPU comes out of the engine's, GIL
# hand-offs included. At 4% it redraws about 3 times a second there (was 5), still live.
CPU_BUDGET = 0.04


class DrawPacer:
    def __init__(
        self,
        budget: float = CPU_BUDGET,
        cpu: Callable[[], float] = time.thread_time,
        wall: Callable[[], float] = time.perf_counter,
    ):
        self.budget, self.cpu, self.wall = budget, cpu, wall
        self.interval = 1.0 / MAX_HZ
        self._last = None  # (wall, cpu) at the previous redraw

    def drew(self) -> None:
        """Call from the UI thread at each redraw; adjusts the interval to the next one."""
        now = (self.wall(), self.cpu())
        if self._last is not None:
            elapsed = now[0] - self._last[0]
            if elapsed > 0:
                share = (now[1] - self._last[1]) / elapsed
                # Halfway to the interval that would have met the budget: steady, not jumpy.
                target = self.interval * share / self.budget
                self.interval = min(1.0 / MIN_HZ, max(1.0 / MAX_HZ, (self.interval + target) / 2))
        self._last = now

    def idle(self) -> None:
        """Between replies: the next reply starts measuring afresh (at the rate it had)."""
        self._last = None
