"""The server inside the app (`glasschat --serve`): each request becomes a conversation of the app's own.

The request line's worker thread (chat/api/line.py) calls `answer`; it hands the request
to the app's UI thread as a `ServedTurn`, in the same queue as the messages the user types
(chat/served_turn.py plans it on the app's conversation, draws it and asks the engine),
then reads the turn's events from a tap on the app's engine events, as the headless
backend reads its session's queue. The transcript, the panels and every view draw the same
events through the app's router, so a request streams into the app as a typed message does.
"""

import concurrent.futures
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional

from model.runtime.settings import DecodeSettings

from .backend import ReplyEnd, ReplyItem, RequestRefused, ServedRequest
from .engine_backend import ReplyMemory, decode_settings, split_messages
from .turn_events import POLL_S, TurnEvents

CLOSING = "The app is closing: this request was not answered."


@dataclass(eq=False, kw_only=True)
class ServedTurn:
    """A request as the UI thread takes it: whose it is, its conversation, and how to decode its reply."""

    client: Optional[str]  # the request's `user`, if it gave one
    system: Optional[str]
    history: list[tuple[str, str, Optional[tuple[int, ...]]]]  # (user, reply, the reply's ids if this app sampled it)
    user: str  # the last user message: the turn to answer
    decode: DecodeSettings
    sent: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)  # the turn id, once sent
    withdrawn: bool = False  # its client left before it was sent
    lock: threading.Lock = field(default_factory=threading.Lock)  # sending and withdrawing: one or the other

    def send(self, turn_id: int) -> bool:
        """From the UI thread, just before the engine is asked: False if the client has withdrawn it."""
        with self.lock:
            if not self.withdrawn:
                self.sent.set_result(turn_id)
            return not self.withdrawn

    def refuse(self, message: str) -> None:
        """From the UI thread: the conversation cannot take it (one line for the client, a 400)."""
        with self.lock:
            if not self.withdrawn:
                self.sent.set_exception(RequestRefused(message))


class AppBackend:
    """Implements `backend.ServeBackend` on a running GlasschatApp (its engine, conversation and screen)."""

    def __init__(self, app, model_id: str):
        self.app, self._model_id = app, model_id
        self.replies = ReplyMemory()
        self.closed = threading.Event()  # the app is closing: no request is taken, the one under way is stopped
        self.answering: Optional[threading.Event] = None  # the cancel flag of the request under way

    def model_id(self) -> str:
        return self._model_id

    def close(self) -> None:
        """The app is closing (it owns the engine): a request waiting for its turn is refused, one under way stopped
        within a step, so the app's exit never waits on a client."""
        self.closed.set()
        if self.answering is not None:
            self.answering.set()

    def answer(self, request: ServedRequest, cancel: threading.Event) -> Iterator[ReplyItem]:
        options = self.app.options
        system, messages = split_messages(request.messages, options.system)
        pairs = [(messages[i].content, messages[i + 1].content) for i in range(0, len(messages) - 1, 2)]
        served = ServedTurn(
            client=request.user,
            system=system,
            history=[(user, reply, self.replies.ids(reply)) for user, reply in pairs],
            user=messages[-1].content,
            decode=decode_settings(options, request.settings),
        )
        if self.closed.is_set():
            raise RequestRefused(CLOSING)
        self.answering = cancel
        events: queue.Queue = queue.Queue()
        self.app.taps.append(events.put)  # before the turn is sent, so none of its events is missed
        try:
            self.app.call_from_thread(self.app.chat.control.serve, served)  # queued behind what waits already
            turn_id = self._sent(served, cancel)
            text = self.app.engine.text()
            stops = served.decode.stop_ids if served.decode.stop_ids is not None else text.stop_ids
            reader = TurnEvents(self.app.engine, events, text.tokenizer)
            for item in reader.reply(turn_id, cancel, served.decode.top_logprobs, stops):
                if isinstance(item, ReplyEnd) and item.reply_ids:
                    self.replies.remember(item.text, item.reply_ids)
                yield item
        finally:
            self.app.taps.remove(events.put)
            self.answering = None

    def _sent(self, served: ServedTurn, cancel: threading.Event) -> int:
        """The turn id once the UI has sent it; a client that leaves first withdraws it (never drawn)."""
        while True:
            if cancel.is_set():
                with served.lock:
                    if not served.sent.done():
                        served.withdrawn = True
                        raise RequestRefused(
                            CLOSING if self.closed.is_set() else "The client went away before its turn."
                        )
                # Sent (or refused) meanwhile: a sent turn is stopped as any reply is.
            try:
                return served.sent.result(timeout=POLL_S)  # a plan the conversation refused raises its RequestRefused
            except concurrent.futures.TimeoutError:
                continue
