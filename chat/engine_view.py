"""How a widget says which engine events it draws, so the screen only routes them.

A method marked `@handles(TurnStarted, ...)` gets every such event in order, as it
arrives, whether the widget is shown or not: it keeps its state there, and skips
costly drawing while hidden. A class has one handler per event type, which calls its
steps in order (a second one is an error when the class is made: two handlers would
run in an order set by the class hierarchy, which no reader sees). A method marked `@draws(TokenGenerated)` is called at
the paced redraw during a reply (see `chat/router.py`) with the newest such event
not yet drawn, and only while the widget is shown; `heavy=True` draws every other
time, for the views that cost most to draw.
"""

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from model.runtime.events import Event


def handles(*events: type) -> Callable:
    """Mark a method as taking every event of these types, in order."""

    def mark(method: Callable) -> Callable:
        method._handles = events
        return method

    return mark


def draws(*events: type, heavy: bool = False) -> Callable:
    """Mark a method as drawing the newest event of these types at each paced redraw."""

    def mark(method: Callable) -> Callable:
        method._draws = (events, heavy)
        return method

    return mark


async def _call(method: Callable, view: Any, event: Event) -> None:
    result = method(view, event)
    if inspect.isawaitable(result):
        await result


class EngineView:
    """Mixed into a widget (or screen) that draws engine events; collects its marked methods once per class."""

    _handlers: ClassVar[dict[type, list[Callable]]] = {}
    _drawers: ClassVar[dict[type, list[tuple[Callable, bool]]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type, list[Callable]] = {}
        drawers: dict[type, list[tuple[Callable, bool]]] = {}
        seen: set[str] = set()
        # Base classes first, so a view's own handlers run after the ones it inherits;
        # a method overridden in a subclass is collected once, as overridden.
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                if not inspect.isfunction(member) or name in seen or getattr(cls, name) is not member:
                    continue
                seen.add(name)
                for event in getattr(member, "_handles", ()):
                    if handlers.get(event):
                        raise TypeError(f"{cls.__name__}: {event.__name__} already has a handler; give it one")
                    handlers.setdefault(event, []).append(member)
                events, heavy = getattr(member, "_draws", ((), False))
                for event in events:
                    drawers.setdefault(event, []).append((member, heavy))
        cls._handlers, cls._drawers = handlers, drawers

    async def take(self, event: Event) -> None:
        """An engine event, in order."""
        for method in self._handlers.get(type(event), ()):
            await _call(method, self, event)

    async def draw(self, event: Event, full: bool) -> None:
        """The newest step of its type not yet drawn; `full` also draws the heavy parts."""
        for method, heavy in self._drawers.get(type(event), ()):
            if full or not heavy:
                await _call(method, self, event)
