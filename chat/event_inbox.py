"""Engine events handed to the UI thread in batches: one wake-up for every event that came while it was busy.

The engine thread emits an event per step. Posting each as its own Textual message
costs both threads per event (a thread-safe hand-off, then the message pump's
dispatch on the UI thread); at 400 steps a second, and whenever a redraw keeps the
UI thread busy for a few steps, that is most of the UI's per-token work. Here the
engine thread appends to a list and wakes the UI only when the list was empty; the
UI takes the whole list, in order. Nothing is dropped or reordered.
"""

import threading
from collections.abc import Callable

from model.runtime.events import Event


class EventInbox:
    def __init__(self, wake: Callable[[], None]):
        self._wake = wake  # called on the engine thread; must be thread-safe (Textual's post_message is)
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def put(self, event: Event) -> None:
        """On the engine thread: keep the event; wake the UI if it has nothing waiting."""
        with self._lock:
            self._events.append(event)
            first = len(self._events) == 1
        if first:
            self._wake()

    def take(self) -> list[Event]:
        """On the UI thread: every event waiting, oldest first."""
        with self._lock:
            events, self._events = self._events, []
        return events
