"""Start the Textual app on the options from the command line, with the conversation store and the settings file."""

import argparse
from dataclasses import asdict

from .options import engine_options
from .recorder import ConversationRecorder
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
    recorder, problem = None, ""
    try:
        store = Store(args.db or default_db_path())
        recorder = ConversationRecorder(
            store,
            args.model or "default",
            {"sampling": asdict(options.sampling), "cache": asdict(options.cache), "max_tokens": options.max_tokens},
        )
    except StoreError as exc:
        problem = str(exc)  # the chat still works; it just is not saved
    app = GlasschatApp(
        options, recorder=recorder, store_problem=problem, settings_file=getattr(args, "settings_file", None)
    )
    app.run()
    return app.return_code or 0
