"""The server's thread beside the app's (`glasschat --serve`): the same routes and line as `glasschat serve`.

uvicorn runs its own event loop on a thread of its own (it installs no signal handlers off
the main thread: Ctrl-C stays the app's); the line's worker hands each request to the app
(`app_backend`). The app's recorder saves what is served, as it saves typed turns.
"""

import socket
import threading
from typing import Optional

from .app_backend import AppBackend
from .line import RequestLine
from .routes import build_app

STOP_S = 5.0  # how long closing the app waits for the server's thread and the line's


class AppServer:
    def __init__(self, app, sock: socket.socket, model_id: str, api_key: Optional[str], waiting: int):
        import uvicorn  # the server's stack: only when serving

        self.sock = sock
        self.backend = AppBackend(app, model_id)
        self.line = RequestLine(self.backend, waiting)
        config = uvicorn.Config(
            build_app(self.line, model_id, api_key),
            log_level="warning",
            log_config=None,  # no handlers of its own on the terminal the app draws
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="glasschat-serve-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.backend.close()  # before the engine shuts down: a reply under way ends, a waiting request is refused
        self.server.should_exit = True
        self.thread.join(STOP_S)
        self.line.close(STOP_S)
        self.sock.close()
