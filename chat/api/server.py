"""`glasschat serve`: load the model, open the store, bind the port, and run the API on uvicorn until Ctrl-C.

The socket is bound here, before uvicorn starts, so a port in use or an address this
machine does not have is one line, not uvicorn's log; `--port 0` takes any free port,
and the line printed at start says which.
"""

import argparse
import errno
import ipaddress
import os
import socket
import sys
from dataclasses import asdict
from typing import Optional

from model.errors import ModelError

from ..options import engine_options
from ..store import Store, StoreError, default_db_path

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket; ModelError with one line when it cannot be had."""
    if not 0 <= port <= 65535:
        raise ModelError(f"--port {port}: give a port from 1 to 65535 (0 picks a free one).")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ModelError(f"Port {port} on {host} is in use (another glasschat serve?): pass another --port.")
        raise ModelError(f"Cannot listen on {host}:{port} ({exc.strerror}): pass another --host or --port.")
    sock.listen(128)
    return sock


def host_warning(host: str, api_key: Optional[str]) -> Optional[str]:
    if is_loopback(host):
        return None
    guard = "only clients with the --api-key can use it" if api_key else "anyone who can reach it can use the model"
    return f"glasschat serve: warning: listening on {host}, not just this machine: {guard}."


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn  # the server's stack: only when serving

    from .engine_backend import EngineBackend
    from .line import RequestLine
    from .routes import build_app
    from .served_store import ServedStore

    if args.queue < 0:
        raise ModelError(f"--queue {args.queue}: give 0 or more requests that may wait.")
    api_key = args.api_key or os.environ.get("GLASSCHAT_API_KEY") or None
    sock = listen(args.host, args.port)  # before the model loads: a busy port is said at once
    warning = host_warning(args.host, api_key)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    options = engine_options(args)
    saver = None
    if not args.no_save:
        try:
            store = Store(args.db or default_db_path())
            settings = {"sampling": asdict(options.sampling), "cache": asdict(options.cache)}
            saver = ServedStore(store, args.model or "default", settings)
        except StoreError as exc:
            print(f"glasschat serve: requests are not saved: {exc}", file=sys.stderr, flush=True)
    backend = EngineBackend(options)
    line = RequestLine(backend, args.queue, on_done=saver.save if saver else lambda _: None)
    try:
        app = build_app(line, backend.model_id(), api_key)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(
            f"glasschat serve: {backend.model_id()} at http://{shown}:{port}/v1 (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
        return 0
    finally:
        line.close()
        backend.close()
        sock.close()
