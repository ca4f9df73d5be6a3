"""Settings that stay: the app opens as the file left it, and writes what the user changes."""

import pytest
from textual.widgets import Input
from ui_helpers import fake_app, screen_text, wait_for

from chat import settings_forms
from chat.launch import read_settings
from chat.user_settings import UserSettings
from chat.widgets.prompt_input import PromptInput
from chat.widgets.transcript import Notice


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path / "glasschat" / "settings.toml"


def shown(app):
    return {
        name for name in ("prefill", "decode", "cache", "topk", "grid", "lens") if app.query_one(f"#{name}").display
    }


@pytest.mark.asyncio
async def test_the_app_opens_as_the_file_left_it_and_saves_what_changes(config):
    read_settings().save(UserSettings(theme="nord", views=("decode", "lens", "confidence")))
    app, holder = fake_app(settings_file=read_settings())
    async with app.run_test(size=(140, 45)) as pilot:
        app.query_one(PromptInput).cursor_blink = False
        await wait_for(pilot, lambda: app.chat.ready)
        assert app.theme == "nord"
        assert shown(app) == {"decode", "lens"} and app.chat.open["confidence"]
        assert holder["engine"].needs.lens_layers is not None  # the open lens view asks the engine for its data

        await pilot.press("f2", "f8", "f9")
        app.theme = "dracula"
        await pilot.pause(0.1)
        assert read_settings().settings == UserSettings(theme="dracula", views=("prefill", "decode"))

        settings_forms.edit_sampling(app)
        await pilot.pause(0.1)
        app.screen.query_one("#field-temp", Input).value = "0.8"
        app.screen.query_one("#field-top_k", Input).value = "40"
        app.screen.query_one("#field-temp", Input).focus()
        await pilot.press("enter")
        await pilot.pause(0.1)
        saved = read_settings().settings
        assert (saved.temp, saved.top_k, saved.top_p, saved.min_p) == (0.8, 40, 1.0, 0.0)
        assert saved.theme == "dracula"


@pytest.mark.asyncio
async def test_a_broken_setting_is_one_line_in_the_transcript(config):
    config.parent.mkdir(parents=True)
    config.write_text("[app]\ntheme = 'plaid'\nviews = ['decode']\n")
    app, _ = fake_app(settings_file=read_settings())
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready and app.query(Notice))
        [notice] = app.query(Notice)
        assert "app.theme" in str(notice.render()) and "plaid" in str(notice.render())
        assert app.theme == "textual-dark" and shown(app) == {"decode"}
        assert sum("plaid" in row for row in screen_text(app)) == 1


@pytest.mark.asyncio
async def test_model_info_shows_this_runs_settings_and_the_file(config):
    app, _ = fake_app(settings_file=read_settings(), max_tokens=77)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        app.chat.action_model_info()
        await pilot.pause(0.2)
        text = "\n".join(screen_text(app))
        assert "This run" in text and "77 tokens" in text and "greedy pick" in text
        assert "settings file" in text
        # The path is there whole, folded over rows when it is long.
        rows = screen_text(app)
        first = next(i for i, row in enumerate(rows) if "settings file" in row)
        start = rows[first].index("/", rows[first].index("settings file"))
        end = rows[first].index("│", start)
        pieces = [row[start:end].strip() for row in rows[first:]]
        path = "".join(pieces[: next(i for i, p in enumerate(pieces) if p.startswith("changes"))])
        assert path == str(config)
