"""Options are parsed once: before or after the subcommand they reach the command (and the engine's
options) alike; one given to a command it does not apply to is refused with one line, never dropped."""

import ast
from pathlib import Path

import pytest

from chat import commands, launch, options
from chat.cli import COMMANDS, parse_args
from chat.options import APP, OPTIONS, engine_options

# A value for every option, other than its default, and what the parsed option must then hold.
SAMPLES = {
    "--model": (["x.gguf"], "x.gguf"),
    "--weights": (["float16"], "float16"),
    "--system": (["Be brief."], "Be brief."),
    "--temp": (["0.7"], 0.7),
    "--top-k": (["40"], 40),
    "--top-p": (["0.9"], 0.9),
    "--min-p": (["0.05"], 0.05),
    "--repetition-penalty": (["1.3"], 1.3),
    "--seed": (["7"], 7),
    "--max-tokens": (["99"], 99),
    "--prompt-lookup": (["off"], "off"),
    "--thinking": (["off"], "off"),
    "--max-kv-size": (["512"], 512),
    "--keep": (["8"], 8),
    "--kv-bits": (["4"], 4),
    "--show-top": (["3"], 3),
    "--ranks": (["2"], 2),
    "--hostfile": (["hosts.json"], "hosts.json"),
    "--pipeline": ([], True),
    "--db": (["chats.db"], "chats.db"),
    "--json": ([], True),
    "--layer": (["2"], 2),
    "--out": (["chat.md"], "chat.md"),
    "--layouts": (["float32"], "float32"),
    "--mlx-lm": ([""], ""),
    "--sizes": (["64"], "64"),
    "--decode-tokens": (["32"], 32),
    "--contexts": (["1000"], "1000"),
    "--context-tokens": (["16"], 16),
    "--repeats": (["2"], 2),
    "--budget": (["60"], 60.0),
    "--skip-extras-check": ([], True),
    "--ui": ([], True),
    "--rounds": (["5"], 5),
    "--per-view": ([], True),
    "--scaling": ([], True),
    "--eviction-tokens": (["0"], 0),
    "--lookup-tokens": (["50"], 50),
    "--lookup-rounds": (["1"], 1),
    "--lookup-only": ([], True),
    "--host": (["0.0.0.0"], "0.0.0.0"),
    "--port": (["9000"], 9000),
    "--api-key": (["sesame"], "sesame"),
    "--queue": (["2"], 2),
    "--no-save": ([], True),
    "--serve": ([], True),
    "--history": ([], True),
    "--search": (["sea otters"], "sea otters"),
    "--preset": (["terse"], "terse"),
    "--file": (["notes.txt"], ["notes.txt"]),
}

# Where each generation option lands in the engine's options.
ENGINE_FIELDS = {
    "--model": lambda o: o.model,
    "--weights": lambda o: o.layout,
    "--system": lambda o: o.system,
    "--temp": lambda o: o.sampling.temperature,
    "--top-k": lambda o: o.sampling.top_k,
    "--top-p": lambda o: o.sampling.top_p,
    "--min-p": lambda o: o.sampling.min_p,
    "--repetition-penalty": lambda o: o.sampling.repetition_penalty,
    "--seed": lambda o: o.sampling.seed,
    "--max-tokens": lambda o: o.max_tokens,
    "--prompt-lookup": lambda o: {None: "auto", True: "on", False: "off"}[o.lookup.enabled],
    "--thinking": lambda o: {None: "auto", True: "on", False: "off"}[o.thinking],
    "--max-kv-size": lambda o: o.cache.max_kv_size,
    "--keep": lambda o: o.cache.keep,
    "--kv-bits": lambda o: o.cache.kv_bits,
    "--show-top": lambda o: o.top_k_shown,
}

# Options that make the group of ranks the model is split over (chat/commands.py), not an engine field.
GROUP_FLAGS = {"--ranks", "--hostfile", "--pipeline"}
# Options that name settings kept in the settings file (tests/test_presets.py follows them to the engine).
FILE_FLAGS = {"--preset"}

POSITIONALS = {APP: [], "run": ["hi"], "tokenize": ["hi"], "replay": ["messages.json"], "inspect": ["hi"]}
POSITIONALS.update({"history": [], "export": ["3"], "bench": [], "serve": []})
ALL_COMMANDS = [APP, *(c.name for c in COMMANDS)]


@pytest.fixture(autouse=True)
def a_preset(tmp_path, monkeypatch):
    """A settings file with the preset the samples name (its settings are not an option's: none are checked here)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "glasschat").mkdir()
    (tmp_path / "glasschat" / "settings.toml").write_text("[presets.terse]\nmax_tokens = 64\n")


def argv(command: str, before: list[str] = (), after: list[str] = ()) -> list[str]:
    head = [] if command == APP else [command]
    return [*before, *head, *POSITIONALS[command], *after]


def test_every_option_and_command_is_covered():
    assert set(SAMPLES) == {o.flag for o in OPTIONS}
    assert set(POSITIONALS) == set(ALL_COMMANDS)
    assert set(ENGINE_FIELDS) >= {o.flag for o in OPTIONS if o.commands >= options.CHATS} - GROUP_FLAGS - FILE_FLAGS
    for option in OPTIONS:
        assert SAMPLES[option.flag][1] != option.default, option.flag  # a sample that proves something


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_options_before_and_after_the_subcommand_reach_the_command(command):
    mine = options.for_command(command)
    assert mine, command
    for option in mine:
        values, expected = SAMPLES[option.flag]
        typed = [option.flag, *values]
        before, after = parse_args(argv(command, before=typed)), parse_args(argv(command, after=typed))
        assert getattr(before, option.dest) == expected == getattr(after, option.dest), option.flag
        assert before.command == after.command == command
        if command in options.CHATS and option.flag in ENGINE_FIELDS:
            field = ENGINE_FIELDS[option.flag]
            assert field(engine_options(before)) == expected == field(engine_options(after)), option.flag
    # All at once, half before and half after, is the same as all after.
    typed = [[o.flag, *SAMPLES[o.flag][0]] for o in mine]
    split = len(typed) // 2
    mixed = parse_args(argv(command, sum(typed[:split], []), sum(typed[split:], [])))
    after = parse_args(argv(command, after=sum(typed, [])))
    assert vars(mixed) == vars(after)
    for option in mine:
        assert getattr(after, option.dest) == SAMPLES[option.flag][1]


@pytest.mark.parametrize("command", sorted(options.CHATS))  # sorted: every xdist worker collects one order
def test_defaults_reach_the_engine_when_nothing_is_typed(command):
    assert engine_options(parse_args(argv(command))) == engine_options(parse_args(argv(command, after=["--temp", "0"])))
    defaults = engine_options(parse_args(argv(command)))
    for option in options.for_command(command):
        if option.flag in ENGINE_FIELDS:
            assert ENGINE_FIELDS[option.flag](defaults) == (None if option.flag == "--model" else option.default)


def test_the_issue_example_runs_the_model_asked_for_at_the_temperature_asked_for():
    args = parse_args(["--model", "x.gguf", "--temp", "0.7", "run", "hi"])
    engine = engine_options(args)
    assert (args.func, engine.model, engine.sampling.temperature) == (commands.run_command, "x.gguf", 0.7)


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_an_option_for_another_command_is_refused_in_one_line(command, capsys):
    for option in OPTIONS:
        if command in option.commands:
            continue
        typed = [option.flag, *SAMPLES[option.flag][0]]
        for where in ("before", "after"):
            with pytest.raises(SystemExit) as exit_:
                parse_args(argv(command, **{where: typed}))
            err = capsys.readouterr().err
            assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
            assert f"{option.flag} does not apply to" in err and "Traceback" not in err


def test_each_command_dispatches_to_its_function():
    funcs = {c.name: c.func for c in COMMANDS}
    assert parse_args([]).func is launch.launch_app
    for command in funcs:
        assert parse_args(argv(command)).func is funcs[command]


def test_no_import_circle_between_the_command_modules():
    """Neither the commands nor the app launcher import the parser (the parser imports them)."""
    chat = Path(commands.__file__).parent
    for module in ("commands.py", "launch.py", "options.py"):
        tree = ast.parse((chat / module).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"cli", "chat.cli"}, module
