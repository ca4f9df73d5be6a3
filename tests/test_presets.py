"""Presets: a round trip through settings.toml, one line for each bad entry, --preset, and the palette."""

import os
import sys

import pytest
from cli_helpers import assert_one_line_error, glasschat
from test_ui import send
from textual.widgets import Input
from ui_helpers import fake_app, wait_for

from chat import preset_forms
from chat.cli import parse_args
from chat.launch import read_settings
from chat.options import engine_options
from chat.presets import Preset
from chat.user_settings import UserSettings, load
from chat.widgets.user_message import UserMessage
from chat.widgets.welcome import Welcome

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path / "glasschat" / "settings.toml"


TRANSLATOR = Preset("translator", {"system": 'Translate into "French".\nOnly the translation.', "temp": 0.3})
CODER = Preset("coder two", {"temp": 0.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "max_tokens": 900})


def test_presets_round_trip_through_the_file(config):
    kept = load()
    kept.presets.update({p.name: p for p in (TRANSLATOR, CODER)})
    assert kept.save(UserSettings(temp=0.7, theme="nord")) is None
    data = tomllib.loads(config.read_text())
    assert data["presets"] == {
        "translator": {"system": 'Translate into "French".\nOnly the translation.', "temp": 0.3},
        "coder two": {"temp": 0.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "max_tokens": 900},
    }
    assert data["sampling"] == {"temp": 0.7} and data["app"] == {"theme": "nord"}
    again = load()
    assert again.presets == {"translator": TRANSLATOR, "coder two": CODER} and again.problems == []
    assert again.settings == UserSettings(temp=0.7, theme="nord")


def test_a_bad_preset_entry_is_one_line_and_the_default(config):
    config.parent.mkdir(parents=True)
    config.write_text(
        "[sampling]\ntemp = 0.5\n"
        "[presets.hot]\ntemp = 'very'\ntop_k = 20\ncolour = 'red'\n"
        "[presets.loose]\ntop_p = 7\nsystem = 3\n"
        "[presets]\nflat = 1\n"
    )
    kept = load()
    assert kept.presets["hot"] == Preset("hot", {"top_k": 20})  # the good setting kept, the bad ones left out
    assert kept.presets["loose"] == Preset("loose", {}) and "flat" not in kept.presets
    problems = kept.problems
    assert len(problems) == 5 and all("\n" not in p for p in problems)
    for phrase in ("presets.hot.temp = 'very' must be a number", "'presets.hot.colour'", "presets.loose.top_p = 7"):
        assert sum(phrase in p for p in problems) == 1, (phrase, problems)
    assert sum("presets.flat must be a table" in p for p in problems) == 1
    assert kept.settings.temp == 0.5  # the rest of the file is read as before
    # With --preset hot the bad temperature is the default's, not the preset's nor an error.
    assert engine_options(parse_args(["run", "hi", "--preset", "hot"])).sampling.temperature == 0.0
    # The app writes the file again (a setting remembered, a preset saved): what it could not read stays as written.
    kept.presets["new"] = Preset("new", {"temp": 0.1})
    assert kept.save(kept.settings.changed(temp=0.6)) is None
    table = tomllib.loads(config.read_text())["presets"]
    assert table["hot"] == {"temp": "very", "top_k": 20, "colour": "red"} and table["flat"] == 1
    assert table["loose"] == {"top_p": 7, "system": 3} and table["new"] == {"temp": 0.1}
    assert len(load().problems) == 5  # and said again, each in its line, until fixed by hand


def test_preset_flag_beats_the_file_and_a_typed_flag_beats_it(config):
    kept = load()
    kept.presets["translator"] = TRANSLATOR
    kept.save(UserSettings(temp=0.7, top_k=40, system="Be brief."))
    app = engine_options(parse_args(["--preset", "translator"]))
    assert (app.system, app.sampling.temperature, app.sampling.top_k) == (TRANSLATOR.values["system"], 0.3, 40)
    assert engine_options(parse_args(["--preset", "translator", "--temp", "1.1"])).sampling.temperature == 1.1
    run = engine_options(parse_args(["run", "hi", "--preset", "translator"]))
    # A headless command takes the preset it names, and still nothing else from the file.
    assert (run.system, run.sampling.temperature, run.sampling.top_k) == (TRANSLATOR.values["system"], 0.3, 0)


def test_an_unknown_preset_is_one_line(config, tmp_path):
    kept = load()
    kept.presets["translator"] = TRANSLATOR
    kept.save(UserSettings())
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    assert_one_line_error(
        glasschat("run", "hi", "--preset", "pirate", env=env), "No preset called 'pirate'", "translator"
    )
    assert_one_line_error(glasschat("tokenize", "hi", "--preset", "translator", env=env), "--preset does not apply")


@pytest.mark.asyncio
async def test_picking_a_preset_and_saving_one_from_the_palette(config):
    kept = load()
    kept.presets["translator"] = TRANSLATOR
    kept.save(UserSettings(temp=0.9))
    app, holder = fake_app(settings_file=read_settings(), max_tokens=200)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        welcome = app.chat.transcript.query_one(Welcome)
        assert "Presets: translator" in str(welcome.query_one(".presets").render())
        [entry] = [c for c in preset_forms.commands(app) if c.title == "Preset: translator"]
        entry.callback()
        await wait_for(pilot, lambda: app.options.system == TRANSLATOR.values["system"])
        await pilot.pause(0.1)
        assert app.options.sampling.temperature == 0.3 and app.options.max_tokens == 200  # unset: kept
        assert holder["engine"].updates[-1].sampling.temperature == 0.3
        assert read_settings().settings.temp == 0.3 and read_settings().settings.system == TRANSLATOR.values["system"]
        assert "System prompt: Translate" in " ".join(str(n.render()) for n in app.chat.transcript.query("Notice"))

        preset_forms.save_as_preset(app)
        await pilot.pause(0.1)
        app.screen.query_one("#field-name", Input).value = "french short"
        app.screen.query_one("#field-name", Input).focus()
        await pilot.press("enter")
        await pilot.pause(0.1)
    saved = read_settings().presets["french short"]
    assert saved.values == {
        "system": TRANSLATOR.values["system"],
        "temp": 0.3,
        "top_k": 0,
        "top_p": 1.0,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "max_tokens": 200,
    }
    assert read_settings().presets["translator"] == TRANSLATOR  # the others are kept


@pytest.mark.asyncio
async def test_a_preset_with_the_system_prompt_in_use_starts_a_new_conversation(config):
    """The engine's report sets the options (OptionsAdopted); with the system prompt unchanged it does not start a
    new conversation by itself, so picking the preset does; the reply length and repetition penalty are remembered."""
    kept = load()
    kept.presets["short"] = Preset("short", {"max_tokens": 50, "repetition_penalty": 1.2})
    kept.save(UserSettings())
    app, holder = fake_app(settings_file=read_settings(), max_tokens=200)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        await send(pilot, "What is the capital of France?")
        await wait_for(pilot, lambda: not app.chat.busy and app.chat.transcript.query(UserMessage))
        [entry] = [c for c in preset_forms.commands(app) if c.title == "Preset: short"]
        entry.callback()
        await wait_for(pilot, lambda: app.options.max_tokens == 50 and not app.chat.transcript.query(UserMessage))
        await wait_for(pilot, lambda: app.chat.ready and not app.conversation.tree.turns)
        assert holder["engine"].updates[-1].sampling.repetition_penalty == 1.2
        assert app.options.sampling.repetition_penalty == 1.2 and app.options.system is None
    remembered = read_settings().settings
    assert (remembered.max_tokens, remembered.repetition_penalty, remembered.temp) == (50, 1.2, None)
