"""Start the Textual app on the options from the command line, with the conversation store and the settings file."""

import argparse
import os
import sys
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from model.errors import ModelError

from .commands import _group
from .options import engine_options
from .recorder import ConversationRecorder
from .search_index import print_progress
from .store import Store, StoreError, default_db_path
from .user_settings import SettingsFile, load


def read_settings() -> SettingsFile:
    """The settings file, checked against the app's own view and theme names."""
    from textual.theme import BUILTIN_THEMES

    from .views import VIEWS

    return load(views=[spec.id for spec in VIEWS], themes=BUILTIN_THEMES)


def launch_app(args: argparse.Namespace) -> int:
    from .app import GlasschatApp  # Textual and the widgets: only when the app runs

    options = engine_options(args)
    # With --ranks N this process is rank 0 and runs the UI; ranks 1..N-1 run the follower loop,
    # as for the headless commands.
    group = _group(args)
    if group is not None:
        options = replace(options, shard=group.shard)
    try:
        return _run_app(GlasschatApp, args, options, group)
    finally:
        if group is not None:
            group.close()


def _run_app(app_class, args: argparse.Namespace, options, group) -> int:
    recorder, problem = None, ""
    try:
        store = Store(args.db or default_db_path(), progress=print_progress)
        recorder = ConversationRecorder(
            store,
            args.model or "default",
            {"sampling": asdict(options.sampling), "cache": asdict(options.cache), "max_tokens": options.max_tokens},
        )
    except StoreError as exc:
        problem = str(exc)  # the chat still works; it just is not saved
    app = app_class(
        options, recorder=recorder, store_problem=problem, settings_file=getattr(args, "settings_file", None)
    )
    if getattr(args, "serve", False):
        app.server = _server(app, args, options)
    if group is not None:
        group.on_lost = partial(_close_on_loss, app)
    app.run()
    return app.return_code or 0


def _server(app, args: argparse.Namespace, options):
    """The server for --serve, its port taken now: a busy one is one line before the app starts."""
    from .api.app_server import AppServer
    from .api.server import host_warning, listen

    if args.queue < 0:
        raise ModelError(f"--queue {args.queue}: give 0 or more requests that may wait.")
    api_key = args.api_key or os.environ.get("GLASSCHAT_API_KEY") or None
    sock = listen(args.host, args.port)
    warning = host_warning(args.host, api_key)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    model_id = Path(options.model).name if options.model else "default"
    return AppServer(app, sock, model_id, api_key, args.queue)


def _close_on_loss(app, line: str) -> None:
    """A rank was lost: the app closes (the terminal restored, the chat saved as it went), then prints the line."""
    try:
        app.call_from_thread(app.exit, None, 3, line)
    except RuntimeError:  # the app is not running (yet, or any more): say it plainly
        print(line, file=sys.stderr, flush=True)
        os._exit(3)
