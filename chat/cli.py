"""The `glasschat` command: the app by default, plus headless subcommands.

The options are declared once, in `chat/options.py`; each subcommand names the
function it runs (`set_defaults(func=...)`), so `main` only dispatches.
"""

import argparse
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, Optional

from model import compute_path
from model.errors import ModelError

from . import options
from .api.server import serve_command
from .attachments import AttachmentError
from .commands import (
    bench_command,
    export_command,
    inspect_command,
    replay_command,
    run_command,
    tokenize_command,
)
from .history_command import history_command
from .launch import launch_app, read_settings
from .presets import unknown
from .store import StoreError


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    func: Callable[[argparse.Namespace], int]
    positionals: tuple[tuple[str, dict], ...] = ()  # (name, add_argument keywords)


COMMANDS = [
    Command("run", "answer one prompt, streaming to stdout", run_command, (("prompt", {}),)),
    Command("tokenize", "show how a message splits into tokens", tokenize_command, (("text", {}),)),
    Command("replay", "run a JSON array of user messages as one conversation", replay_command, (("file", {}),)),
    Command(
        "inspect",
        "attention, logit lens, top-k and cache for one prompt, headless",
        inspect_command,
        (("prompt", {}),),
    ),
    Command("history", "list saved conversations, or search every message (--search WORDS)", history_command),
    Command("export", "print a saved conversation as Markdown", export_command, (("conversation", {"type": int}),)),
    Command("bench", "measure prefill and decode against mlx-lm and llama.cpp", bench_command),
    Command("serve", "answer OpenAI-style chat requests over HTTP (/v1/chat/completions)", serve_command),
]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A mistake on the command line is one line, as every other error a user can cause."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    parser = Parser(prog="glasschat", description=__doc__.splitlines()[0])
    options.attach(parser, options.APP)
    parser.set_defaults(func=launch_app, command=options.APP)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        for name, keywords in command.positionals:
            p.add_argument(name, **keywords)
        options.attach(p, command.name)
        p.set_defaults(func=command.func, command=command.name)
    return parser


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command and its options, defaults filled in; exits with one line on a mistake.

    The app takes its defaults from the settings file (a flag still wins); the headless
    commands ignore the file, so a script prints the same on every machine, unless it
    names a preset there (`--preset NAME`), whose settings then beat the file's.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults: dict = {}
    if args.command == options.APP:
        args.settings_file = read_settings()
        defaults = args.settings_file.settings.flag_defaults()
    if getattr(args, "preset", None) is not None and args.command in options.CHATS:
        defaults.update(_preset(args, parser))
    return options.complete(args, parser, defaults)


def _preset(args: argparse.Namespace, parser: Parser) -> dict:
    """The settings of the preset named by --preset; one line and exit 2 if the file has none by that name."""
    settings_file = getattr(args, "settings_file", None) or read_settings()
    preset = settings_file.presets.get(args.preset)
    if preset is None:
        parser.exit(2, f"glasschat: {unknown(args.preset, settings_file.presets, settings_file.path)}\n")
    if args.command != options.APP:  # the app shows the file's problems in the chat
        for problem in settings_file.problems:
            if f"presets.{args.preset}." in problem:
                print(f"glasschat: {problem}", file=sys.stderr)
    return dict(preset.values)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and SIGTERM become a clean cancel in the commands below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        compute_path.asked()  # a bad GLASSCHAT_PATH is one line before anything loads
        return args.func(args)
    except (ModelError, StoreError, AttachmentError) as exc:
        print(f"glasschat: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("glasschat: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
