"""A model-free `ServeBackend` for the API tests, and a uvicorn server on a free loopback port to put it behind.

The fake's "tokens" are words: a prompt is its messages' words with a role marker
before each, the reply echoes the last user message word by word, and a pretend cache
holds the words fed so far, so cached tokens are the prefix a request shares with what
came before (as the engine counts them). A gate lets a test hold a reply mid-way; the
fake records what it was asked, in order, and every word it sent.
"""

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Optional

import uvicorn

from chat.api.backend import (
    PromptRead,
    ReplyEnd,
    ReplyItem,
    ReplyStep,
    RequestRefused,
    ServedRequest,
    TopLogprob,
)
from chat.api.line import RequestLine
from chat.api.routes import build_app
from chat.api.server import listen

MODEL_ID = "fake-echo"
ALTERNATIVES = [f"alt{i}" for i in range(25)]  # the runners-up each step offers, best first


def prompt_words(request: ServedRequest) -> list[str]:
    words = []
    for m in request.messages:
        words += [f"<{m.role}>", *m.content.split()]
    return [*words, "<assistant>"]


def reply_pieces(request: ServedRequest) -> list[str]:
    """The reply, a piece per token: "echo:" then each word of the last message, with its space."""
    return ["echo:", *(" " + w for w in request.messages[-1].content.split())]


def entry(token: str, logprob: float) -> TopLogprob:
    return TopLogprob(token=token, logprob=logprob, bytes=tuple(token.encode()))


def step(index: int, piece: str) -> ReplyStep:
    """Token `index` of a reply: its own logprob, then runners-up each a little less likely."""
    chosen = -0.1 * (index + 1)
    top = (entry(piece, chosen), *(entry(a, chosen - 1.0 - i) for i, a in enumerate(ALTERNATIVES)))
    return ReplyStep(token_id=index, text=piece, logprob=chosen, token=top[0], top=top)


class FakeBackend:
    def __init__(self, delay: float = 0.0):
        self.delay = delay  # seconds per token
        self.held: list[str] = []  # the pretend cache: every word fed, in order
        self.asked: list[str] = []  # each request's last message, in the order answered
        self.sent: list[list[str]] = []  # each request's reply pieces as yielded
        self.ends: list[ReplyEnd] = []
        self.gate = threading.Event()  # cleared: replies wait before their next token
        self.gate.set()
        self.answering = threading.Event()  # set once a request has started
        self.closed = False

    def model_id(self) -> str:
        return MODEL_ID

    def close(self) -> None:
        self.closed = True

    def answer(self, request: ServedRequest, cancel: threading.Event) -> Iterator[ReplyItem]:
        last = request.messages[-1].content
        if last == "refuse me":
            raise RequestRefused("This fake refuses that message.")
        self.asked.append(last)
        words = prompt_words(request)
        cached = 0
        while cached < min(len(words), len(self.held)) and words[cached] == self.held[cached]:
            cached += 1
        self.held = list(words)
        self.answering.set()
        yield PromptRead(prompt_tokens=len(words), cached_tokens=cached)
        pieces, sent = reply_pieces(request), []
        self.sent.append(sent)
        limit = request.settings.max_tokens or 64
        reason = "stop" if len(pieces) <= limit else "length"
        for i, piece in enumerate(pieces[:limit]):
            self.gate.wait()
            time.sleep(self.delay)
            if cancel.is_set():
                reason = "cancelled"
                break
            sent.append(piece)
            self.held.append(piece.strip())  # the cache holds exactly what was generated, as words
            yield step(i, piece)
        end = ReplyEnd(finish_reason=reason, completion_tokens=len(sent), reply_ids=tuple(range(len(sent))))
        self.ends.append(end)
        yield end


@contextlib.contextmanager
def serving(backend, api_key: Optional[str] = None, waiting: int = 8, on_done=lambda _: None):
    """The API on a free loopback port in this process: yields (base URL, the line)."""
    line = RequestLine(backend, waiting, on_done)
    app = build_app(line, backend.model_id(), api_key)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", line
    finally:
        backend.gate.set()
        server.should_exit = True
        thread.join(10)
        line.close()
        sock.close()
