"""The command line's options, each declared once with the commands it applies to.

An option may be given before or after the subcommand: `glasschat --temp 0.7 run "hi"`
and `glasschat run "hi" --temp 0.7` are the same. One that does not apply to the
command is refused with one line, never dropped. The parsers only collect what was
typed (no defaults), and the defaults are filled in here once the command is known:
argparse copies a subcommand's defaults over the values given before it, which is
how an option before the subcommand used to be lost.
"""

import argparse
from dataclasses import dataclass, field
from typing import Any, Optional

from model.cache.settings import CacheSettings
from model.loading.weights import LAYOUTS
from model.runtime.settings import EngineOptions, LookupSettings, SamplingSettings

APP = "app"  # no subcommand: the Textual app
SERVE = frozenset({"serve"})  # the OpenAI-compatible server (chat/api)
SERVES = SERVE | {APP}  # the server's address and line: `glasschat serve`, or the app with --serve
LOADS = frozenset({APP, "run", "replay", "inspect", "tokenize", "bench", "serve"})  # commands that load a model
CHATS = frozenset({APP, "run", "replay", "serve"})  # commands that generate replies (serve: a request may override)
INSPECTS = CHATS | {"inspect"}  # commands that build a prompt for a whole model
BENCH = frozenset({"bench"})
GENERATION = "model and generation (mlx-lm names)"
LOOKUP_CHOICES = {"auto": None, "on": True, "off": False}  # --prompt-lookup: LookupSettings.enabled
THINKING_CHOICES = {"auto": None, "on": True, "off": False}  # --thinking: EngineOptions.thinking
# A repeatable option typed before the subcommand is kept apart (argparse puts the subcommand's list in its
# place), and the two lists are joined once the command is known: --file a run hi --file b is both files.
BEFORE = "before_subcommand_"


@dataclass(frozen=True)
class Option:
    flag: str
    commands: frozenset[str]  # where it applies
    default: Any = None
    help: str = ""
    group: str = GENERATION
    kwargs: dict = field(default_factory=dict)  # type, choices or action, as argparse takes them
    name: str = ""  # where argparse keeps it, when the flag's own name is taken (replay's FILE)

    @property
    def dest(self) -> str:
        return self.name or self.flag.lstrip("-").replace("-", "_")

    def attach(self, parser: argparse.ArgumentParser, shown: bool = True, before: bool = False) -> None:
        # SUPPRESS: an option not typed leaves no value, so nothing typed is ever overwritten.
        parser.add_argument(
            self.flag,
            dest=BEFORE + self.dest if before and self.kwargs.get("action") == "append" else self.dest,
            default=argparse.SUPPRESS,
            help=self.help if shown else argparse.SUPPRESS,
            **self.kwargs,
        )


OPTIONS: list[Option] = [
    Option("--model", LOADS, help="a .gguf file, a Hugging Face/MLX folder, or a Hub id (default: SmolLM2-135M)"),
    Option(
        "--weights",
        INSPECTS,
        "auto",
        "weight layout: auto keeps the file's quantized weights (on a CPU only where the SIMD kernel takes them; float32 there otherwise)",
        kwargs={"choices": LAYOUTS},
    ),
    Option("--system", INSPECTS, help="system prompt (default: the model template's own)"),
    Option(
        "--preset",
        CHATS,
        help="a preset from the settings file, [presets.NAME]: its system prompt and sampling (a flag still wins)",
    ),
    Option(
        "--file",
        frozenset({"run", "replay"}),
        (),
        "attach this text file to the message (replay: to the first); repeat for more",
        kwargs={"action": "append", "metavar": "PATH"},
        name="files",
    ),
    Option("--temp", CHATS, 0.0, "temperature; 0 is greedy", kwargs={"type": float}),
    Option("--top-k", CHATS, 0, "sample from the k most likely tokens (0: all)", kwargs={"type": int}),
    Option("--top-p", CHATS, 1.0, "nucleus sampling mass", kwargs={"type": float}),
    Option("--min-p", CHATS, 0.0, "drop tokens under min-p x the top probability", kwargs={"type": float}),
    Option(
        "--repetition-penalty",
        CHATS,
        1.0,
        "penalty on recently seen tokens, CTRL's rule (1: none)",
        kwargs={"type": float},
    ),
    Option("--seed", CHATS, None, "random seed for sampling", kwargs={"type": int}),
    Option("--max-tokens", CHATS, 512, "longest reply, in tokens", kwargs={"type": int}),
    Option(
        "--prompt-lookup",
        CHATS,
        "auto",
        "guess tokens from the conversation, verify them in one pass: the same reply, faster when it quotes "
        "(auto: on where it measured faster; off with 4-bit weights on a one-core CPU)",
        kwargs={"choices": LOOKUP_CHOICES},
    ),
    Option(
        "--thinking",
        CHATS,
        "auto",
        "a thinking model (Qwen3, SmolLM3) thinks before it answers (auto: as its template has it)",
        kwargs={"choices": THINKING_CHOICES},
    ),
    Option("--max-kv-size", CHATS, 2048, "KV cache capacity in tokens", kwargs={"type": int}),
    Option(
        "--keep", CHATS, None, "tokens pinned at the cache start (default: the system prompt)", kwargs={"type": int}
    ),
    Option("--kv-bits", CHATS, None, "quantize the KV cache", kwargs={"type": int, "choices": (4, 8)}),
    Option(
        "--ranks",
        frozenset({APP, "run", "replay", "inspect", "bench"}),
        1,
        "split the model over this many processes on this machine (tensor parallel, MLX ring over 127.0.0.1)",
        kwargs={"type": int},
    ),
    Option(
        "--hostfile",
        frozenset({APP, "run", "replay", "inspect", "bench"}),
        None,
        "split the model over the hosts this JSON lists, one rank each, this machine first (mlx.launch's format)",
    ),
    Option(
        "--pipeline",
        frozenset({APP, "run", "replay", "inspect"}),
        False,
        "with --ranks or --hostfile: split the layers into contiguous stages instead (hosts of different memory)",
        kwargs={"action": "store_true"},
    ),
    Option("--show-top", CHATS | BENCH, 10, "next-token candidates computed per step", kwargs={"type": int}),
    Option(
        "--db",
        frozenset({APP, "replay", "history", "export", "serve"}),
        help="conversation database (default: glasschat.db in the XDG data directory)",
        group="output",
    ),
    Option(
        "--json",
        frozenset({"run", "tokenize", "replay", "inspect", "bench", "export", "history"}),
        False,
        "print JSON instead of text (replay: one object per turn, per line; history: per conversation or hit)",
        "output",
        {"action": "store_true"},
    ),
    Option(
        "--layer",
        frozenset({"inspect"}),
        None,
        "also give this layer's attention head by head",
        "output",
        {"type": int},
    ),
    Option(
        "--search",
        frozenset({"history"}),
        None,
        "the messages of every saved conversation that hold all these words, best first (quote several)",
        "output",
        {"metavar": "WORDS"},
    ),
    Option("--out", frozenset({"export"}), None, "write to this file instead of stdout", "output"),
    Option(
        "--host",
        SERVES,
        "127.0.0.1",
        "address to listen on (loopback by default; 0.0.0.0 lets other machines in, with a warning)",
        "server",
    ),
    Option(
        "--serve",
        frozenset({APP}),
        False,
        "also answer OpenAI-style chat requests (as `glasschat serve`), each shown here as a conversation of its own",
        "server",
        {"action": "store_true"},
    ),
    Option("--port", SERVES, 8080, "port to listen on (0: any free port, printed at start)", "server", {"type": int}),
    Option(
        "--api-key",
        SERVES,
        None,
        "require the header Authorization: Bearer KEY (default: $GLASSCHAT_API_KEY, else none)",
        "server",
    ),
    Option(
        "--queue",
        SERVES,
        8,
        "requests that may wait behind the one being answered; more get 429",
        "server",
        {"type": int},
    ),
    Option(
        "--no-save",
        SERVE,
        False,
        "do not save requests in the conversation store",
        "server",
        {"action": "store_true"},
    ),
    Option("--layouts", BENCH, "float32,quantized", "our weight layouts to measure", "bench"),
    Option("--mlx-lm", BENCH, "quantized,float32", "mlx-lm weight layouts to measure ('' skips)", "bench"),
    Option("--sizes", BENCH, "64,512,2048", "prompt lengths for prefill", "bench"),
    Option("--decode-tokens", BENCH, 256, "tokens to decode", "bench", {"type": int}),
    Option(
        "--contexts", BENCH, "600,2000", "the long-context row: decode after these prompt lengths ('' skips)", "bench"
    ),
    Option("--context-tokens", BENCH, 64, "tokens decoded after each long context", "bench", {"type": int}),
    Option("--repeats", BENCH, 1, "runs of each measurement", "bench", {"type": int}),
    Option(
        "--budget",
        BENCH,
        180.0,
        "skip a measurement the rates so far say would take longer (seconds)",
        "bench",
        {"type": float},
    ),
    Option("--skip-extras-check", BENCH, False, "skip timing the per-token extras", "bench", {"action": "store_true"}),
    Option(
        "--ui",
        BENCH,
        False,
        "instead: decode through the Textual app (headless) against the engine alone",
        "bench",
        {"action": "store_true"},
    ),
    Option("--rounds", BENCH, 3, "with --ui: interleaved runs of each setting (medians)", "bench", {"type": int}),
    Option(
        "--per-view",
        BENCH,
        False,
        "with --ui: each view alone too, and the engine told its needs (the cost table per view)",
        "bench",
        {"action": "store_true"},
    ),
    Option(
        "--scaling",
        BENCH,
        False,
        "instead: resident memory per --layouts, and a random model of Llama 3.2 1B's shape (bench.scaling)",
        "bench",
        {"action": "store_true"},
    ),
    Option(
        "--history",
        BENCH,
        False,
        "instead: full-text search of saved conversations on a database of 10,000 messages (chat/history_bench.py)",
        "bench",
        {"action": "store_true"},
    ),
    Option("--lookup-tokens", BENCH, 200, "prompt lookup: longest reply timed (0 skips)", "bench", {"type": int}),
    Option("--lookup-rounds", BENCH, 3, "prompt lookup: interleaved rounds (medians)", "bench", {"type": int}),
    Option(
        "--lookup-only",
        BENCH,
        False,
        "measure only prompt lookup against plain decode",
        "bench",
        {"action": "store_true"},
    ),
    Option(
        "--eviction-tokens",
        BENCH,
        600,
        "decode this many tokens in a 256-token cache to time evictions (0 skips)",
        "bench",
        {"type": int},
    ),
]


def for_command(command: str) -> list[Option]:
    return [option for option in OPTIONS if command in option.commands]


def attach(parser: argparse.ArgumentParser, command: str) -> None:
    """Every option on `parser`; those that do not apply to `command` are accepted but not listed in its help."""
    groups: dict[str, Any] = {}
    for option in OPTIONS:
        shown = command in option.commands
        group = groups.setdefault(option.group, parser.add_argument_group(option.group)) if shown else parser
        option.attach(group, shown, before=command == APP)


def complete(
    args: argparse.Namespace, parser: argparse.ArgumentParser, defaults: Optional[dict] = None
) -> argparse.Namespace:
    """Refuse what was typed for another command, then fill in the defaults of the command's options
    (`defaults`, by dest, replace the table's: the app's settings file)."""
    defaults = defaults or {}
    command = args.command
    for option in OPTIONS:
        before = vars(args).pop(BEFORE + option.dest, None)
        if before is not None:
            setattr(args, option.dest, before + getattr(args, option.dest, []))
    for option in OPTIONS:
        if hasattr(args, option.dest) and command not in option.commands:
            where = ", ".join(_name(c) for c in sorted(option.commands, key=lambda c: (c != APP, c)))
            parser.error(f"{option.flag} does not apply to {_name(command)}, only to {where}")
    for option in for_command(command):
        if not hasattr(args, option.dest):
            setattr(args, option.dest, defaults.get(option.dest, option.default))
    return args


def _name(command: str) -> str:
    return "the app" if command == APP else command


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """What the engine is built with, from the parsed options of the app, `run` or `replay`."""
    return EngineOptions(
        model=args.model,
        layout=args.weights,
        system=args.system,
        sampling=SamplingSettings(
            temperature=args.temp,
            top_k=args.top_k,
            top_p=args.top_p,
            min_p=args.min_p,
            repetition_penalty=args.repetition_penalty,
            seed=args.seed,
        ),
        cache=CacheSettings(max_kv_size=args.max_kv_size, keep=args.keep, kv_bits=args.kv_bits),
        lookup=LookupSettings(enabled=LOOKUP_CHOICES[args.prompt_lookup]),
        max_tokens=args.max_tokens,
        top_k_shown=args.show_top,
        thinking=THINKING_CHOICES[args.thinking],
    )
