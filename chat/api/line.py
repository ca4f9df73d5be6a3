"""One request at a time on the model, the rest waiting in a bounded line; each reply streamed back to its client.

The model answers requests one by one (one engine thread owns MLX, and the cache is
one conversation's at a time), so a worker thread takes them in the order they came.
At most `waiting` may wait behind the one being answered: one more is refused at once
(`LineFull`, a 429 for the client) rather than left to time out. A request whose client
has gone is skipped if it has not started, and stopped within a step if it has.

The worker hands each reply's items to the request's asyncio loop (`Ticket`); the
HTTP side never touches the backend.
"""

import asyncio
import queue
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Optional, Union

from .backend import PromptRead, ReplyEnd, ReplyStep, RequestRefused, ServeBackend, ServedRequest
from .stop_strings import StopFilter
from .validate import ApiError


class LineFull(Exception):
    """As many requests are waiting as the line holds."""


@dataclass(frozen=True, kw_only=True)
class Finished:
    """The reply is over: the backend's end, and whether a stop string cut it."""

    end: ReplyEnd
    stopped_by_string: bool


@dataclass(frozen=True, kw_only=True)
class Failed:
    error: ApiError


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one answered request gave its client, for the store."""

    request: ServedRequest
    prompt: Optional[PromptRead]
    steps: tuple[ReplyStep, ...]  # as sent (a stop string's step cut)
    finished: Finished


Item = Union[PromptRead, ReplyStep, Finished, Failed]


@dataclass(eq=False)
class Ticket:
    """One request in the line, seen from the HTTP side: its items arrive on `loop` in order."""

    request: ServedRequest
    loop: asyncio.AbstractEventLoop
    items: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """The client went away: skip the request, or stop its reply at the next step."""
        self.cancelled.set()

    async def replies(self) -> AsyncIterator[Item]:
        """Every item of the reply, ending with Finished or Failed."""
        while True:
            item = await self.items.get()
            yield item
            if isinstance(item, (Finished, Failed)):
                return

    def post(self, item: Item) -> None:
        """From the worker thread."""
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, item)
        except RuntimeError:  # the loop has closed: nobody is listening
            self.cancel()


_CLOSE = object()


class RequestLine:
    def __init__(
        self,
        backend: ServeBackend,
        waiting: int = 8,
        on_done: Callable[[Outcome], None] = lambda _: None,
    ):
        self.backend = backend
        self.waiting = waiting
        self.on_done = on_done
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._queued = 0  # submitted, not yet started
        self.answered = 0  # requests run to their end (a test reads it)
        self._thread = threading.Thread(target=self._work, name="glasschat-serve-line", daemon=True)
        self._thread.start()

    def submit(self, request: ServedRequest, loop: asyncio.AbstractEventLoop) -> Ticket:
        """Queue a request; raises LineFull when `waiting` requests are already waiting."""
        with self._lock:
            if self._queued >= self.waiting:
                raise LineFull
            self._queued += 1
        ticket = Ticket(request=request, loop=loop)
        self._queue.put(ticket)
        return ticket

    @property
    def queued(self) -> int:
        """Requests waiting now, not yet started."""
        return self._queued

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(_CLOSE)
        self._thread.join(timeout)

    def _work(self) -> None:
        while (ticket := self._queue.get()) is not _CLOSE:
            with self._lock:
                self._queued -= 1
            if ticket.cancelled.is_set():  # its client left while it waited: never answered
                ticket.post(Failed(error=ApiError(status=499, message="The client went away.", type="client_closed")))
                continue
            try:
                outcome = self._run(ticket)
            except RequestRefused as exc:
                ticket.post(Failed(error=ApiError(status=400, message=str(exc))))
                continue
            except Exception as exc:  # a bug: the client gets a 500, the server goes on with the next request
                traceback.print_exc()
                message = f"Internal error ({type(exc).__name__}: {exc}); the server goes on."
                ticket.post(Failed(error=ApiError(status=500, message=message, type="server_error")))
                continue
            self.answered += 1
            try:
                self.on_done(outcome)
            except Exception:
                traceback.print_exc()

    def _run(self, ticket: Ticket) -> Outcome:
        """Run one request through the backend, cutting it at a stop string."""
        request = ticket.request
        stops = StopFilter(request.settings.stop)
        prompt, sent = None, []
        for item in self.backend.answer(request, ticket.cancelled):
            if isinstance(item, PromptRead):
                prompt = item
                ticket.post(item)
            elif isinstance(item, ReplyStep):
                released = stops.feed(item)
                if stops.stopped:
                    ticket.cancelled.set()  # the backend stops at its next step
                sent += released
                for step in released:
                    ticket.post(step)
            elif isinstance(item, ReplyEnd):
                for step in stops.finish():
                    sent.append(step)
                    ticket.post(step)
                finished = Finished(end=item, stopped_by_string=stops.stopped)
                ticket.post(finished)
                return Outcome(request=request, prompt=prompt, steps=tuple(sent), finished=finished)
        raise RuntimeError("the backend's reply ended without a ReplyEnd")
