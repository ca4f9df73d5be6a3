"""Rank 0's communication in a decode step, measured inside the step itself.

A decode step's all_sums sit in one lazy graph, interleaved with the compute that
feeds them, so its wall time cannot be split after the fact. A timed step
evaluates the graph up to each collective, then the collective alone, and adds
up the second part: what rank 0 waits in its collectives (the transfer, and any
rank still computing its share, since a sum cannot finish before every part has
come) against the rest of its forward pass. `time_step_comm` (mirror) times the
same all_sums alone at start; this is the figure as the step really pays it.

The syncs cost a timed step the overlap with the token before it (decode queues
step n+1 before reading token n), so at most one step per `interval_s` is timed:
every step where steps are slower than that, as on a busy CPU, and the first
decode step after each prefill, so even a short reply has one.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Optional

import mlx.core as mx

from model.distributed.info import StepTiming

INTERVAL_S = 0.4  # the views redraw at most 2.5 times a second: more timed steps would not be seen


class StepTimer:
    def __init__(self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.perf_counter):
        self.interval_s = interval_s
        self.clock = clock
        self.active = False  # inside a timed step: the collectives time themselves
        self.comm_s = 0.0
        self.collectives = 0
        self.timed = 0  # steps timed so far
        self.last: Optional[StepTiming] = None
        self._next_at = 0.0

    def arm(self) -> None:
        """Time the next step, whenever it comes."""
        self._next_at = 0.0

    def due(self) -> bool:
        return self.clock() >= self._next_at

    def collective(self, before: Optional[mx.array], op: Callable[[], mx.array], count: int = 1) -> mx.array:
        """Run `op` (one or more collectives) on its own: `before`, its input, is computed first, off the clock."""
        if before is not None:
            mx.eval(before)
        start = self.clock()
        out = op()
        mx.eval(out)
        self.comm_s += self.clock() - start
        self.collectives += count
        return out

    @contextmanager
    def step(self) -> Iterator[None]:
        """A timed forward pass: everything evaluated inside is the step; the collectives' share is kept apart."""
        self.active, self.comm_s, self.collectives = True, 0.0, 0
        start = self.clock()
        try:
            yield
        finally:
            self.active = False
        total = self.clock() - start
        self.timed += 1
        self.last = StepTiming(self.comm_s, total - self.comm_s, self.collectives, self.timed)
        self._next_at = start + self.interval_s
