"""The settings file: a round trip through TOML, one line for what is broken, and flags that beat it."""

import os
import sys

import pytest

from chat import user_settings
from chat.cli import parse_args
from chat.options import engine_options
from chat.user_settings import UserSettings, load, settings_path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

VIEWS = ("prefill", "decode", "cache", "topk", "grid", "attention", "lens", "confidence")


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path / "glasschat" / "settings.toml"


def test_the_file_lives_in_the_config_dir(config):
    assert settings_path() == config


def test_round_trip_through_the_file(config):
    chosen = UserSettings().changed(
        temp=0.7, top_k=40, top_p=0.9, min_p=0.05, max_kv_size=512, keep=8, kv_bits=8, prompt_lookup="off",
        thinking="off", system='Answer in "one" line.\nBe kind.', theme="nord", views=["decode", "lens"],
    )  # fmt: skip
    assert load().save(chosen) is None
    # The file is TOML any reader takes, laid out in tables, with nothing unset written.
    data = tomllib.loads(config.read_text())
    assert data == {
        "sampling": {"temp": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05},
        "cache": {"max_kv_size": 512, "keep": 8, "kv_bits": 8},
        "decode": {"prompt_lookup": "off"},
        "chat": {"thinking": "off", "system": 'Answer in "one" line.\nBe kind.'},
        "app": {"theme": "nord", "views": ["decode", "lens"]},
    }
    again = load(views=VIEWS, themes=("nord",))
    assert again.settings == chosen and again.problems == []


def test_a_corrupt_file_gives_one_line_and_the_defaults_and_is_left_alone(config):
    config.parent.mkdir(parents=True)
    config.write_text("[sampling\ntemp = 0.7\n")
    loaded = load()
    assert loaded.settings == UserSettings()
    assert len(loaded.problems) == 1 and "not valid TOML" in loaded.problems[0] and str(config) in loaded.problems[0]
    assert "\n" not in loaded.problems[0]
    # Changing a setting in that run does not write over the user's file.
    assert "not saved" in loaded.save(UserSettings(temp=1.0))
    assert config.read_text() == "[sampling\ntemp = 0.7\n"


def test_broken_and_unknown_settings_give_one_line_each_and_their_default(config):
    config.parent.mkdir(parents=True)
    config.write_text(
        "colour = 'blue'\n"
        "[sampling]\ntemp = 'hot'\ntop_k = 40\ntop_p = 7.5\nmax_tokens = 1.5\nwarmth = 3\n"
        "[cache]\nkv_bits = 6\nmax_kv_size = 512\n[decode]\nprompt_lookup = true\n"
        "[app]\ntheme = 'no-such-theme'\nviews = ['decode', 'x-ray']\n"
    )
    loaded = load(views=VIEWS, themes=("nord",))
    # What was right is kept; each wrong one is left at its default.
    assert loaded.settings == UserSettings(top_k=40, max_kv_size=512)
    problems = loaded.problems
    assert len(problems) == 9 and all("\n" not in p for p in problems)
    for phrase in ("colour", "sampling.temp", "sampling.top_p", "sampling.max_tokens", "sampling.warmth"):
        assert sum(phrase in p for p in problems) == 1, (phrase, problems)
    for phrase in ("cache.kv_bits", "decode.prompt_lookup", "no-such-theme", "x-ray"):
        assert sum(phrase in p for p in problems) == 1, (phrase, problems)


def test_a_flag_beats_the_file_for_that_run_and_headless_commands_ignore_it(config):
    load().save(UserSettings(temp=0.7, top_k=40, max_kv_size=512, system="Be brief.", prompt_lookup="off"))
    args = parse_args(["--temp", "0.2"])
    options = engine_options(args)
    assert options.sampling.temperature == 0.2  # the flag
    assert options.sampling.top_k == 40 and options.cache.max_kv_size == 512 and options.system == "Be brief."
    assert options.lookup.enabled is False
    assert engine_options(parse_args(["--prompt-lookup", "on"])).lookup.enabled
    assert args.settings_file.settings.temp == 0.7  # and the file still says what it said
    run = engine_options(parse_args(["run", "hello"]))
    assert run.sampling.temperature == 0.0 and run.sampling.top_k == 0 and run.system is None
    assert run.lookup.enabled is None  # auto: on where it pays off


def test_a_config_dir_that_cannot_be_made_gives_one_line(config):
    config.parent.parent.mkdir(parents=True, exist_ok=True)
    config.parent.write_text("a file where the glasschat folder should be")
    problem = load().save(UserSettings(temp=1.0))
    assert problem.startswith("Settings not saved") and "\n" not in problem


def test_the_suite_never_reads_the_developers_own_settings():
    assert os.environ["XDG_CONFIG_HOME"] != os.path.expanduser("~/.config")
    assert user_settings.config_dir().parent == user_settings.Path(os.environ["XDG_CONFIG_HOME"])
