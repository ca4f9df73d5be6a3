"""Options have one way in: asked of the engine, taken from its report (OptionsAdopted), never before it.

A cache setting the engine refuses (here: a sink larger than half of what the tiny model's
512-token context lets the cache hold, which the form cannot know) must leave the app, the
engine and settings.toml on the old value, and the conversation as it was. One it accepts
is taken by all three, and starts a new conversation on the new cache.
"""

import pytest
from engine_harness import SyncChat
from test_ui import send
from textual.widgets import Input
from ui_helpers import wait_for

from chat import settings_forms
from chat.app import GlasschatApp
from chat.launch import read_settings
from chat.widgets.transcript import Notice
from model.cache.settings import CacheSettings
from model.runtime.engine import Engine
from model.runtime.events import OptionsAdopted, OptionsRefused
from model.runtime.settings import EngineOptions

TOO_BIG = {"size": "2048", "keep": "1000"}  # the form allows a sink up to half of 2048; the model caps the cache at 512


def test_a_refused_cache_setting_changes_nothing_in_the_engine_or_the_conversation(tiny_chat_model):
    run = SyncChat(model=tiny_chat_model, layout="float32", max_tokens=4)
    run.turn("Hello")
    old, cache = run.conversation.options, run.cache
    run.update(cache=CacheSettings(max_kv_size=2048, keep=1000))
    refused = run.events[-1]
    assert isinstance(refused, OptionsRefused) and "--keep 1000" in refused.message
    assert refused.options == old == run.core.options == run.conversation.options
    assert run.cache is cache and run.cache.length > 0 and run.conversation.tree.path() == [1]
    run.update(cache=CacheSettings(max_kv_size=256))
    adopted = run.events[-1]
    assert isinstance(adopted, OptionsAdopted) and adopted.cache_reset
    assert run.core.options.cache == run.conversation.options.cache == CacheSettings(max_kv_size=256)
    assert run.cache.capacity == 256 and run.cache.length == 0 and run.conversation.tree.path() == []


async def submit_cache_form(pilot, values: dict) -> None:
    app = pilot.app
    settings_forms.edit_cache(app)
    await pilot.pause(0.1)
    for name, value in values.items():
        app.screen.query_one(f"#field-{name}", Input).value = value
    app.screen.query_one("#field-size", Input).focus()
    await pilot.press("enter")


@pytest.mark.asyncio
async def test_the_app_the_engine_and_the_settings_file_keep_the_old_value_when_the_engine_refuses(
    tiny_chat_model, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    engines, seen = [], []

    def factory(options, emit):
        def tee(event):
            seen.append(event)
            emit(event)

        engines.append(Engine(options, tee))
        return engines[0]

    options = EngineOptions(model=tiny_chat_model, layout="float32", max_tokens=4)
    app = GlasschatApp(options, engine_factory=factory, settings_file=read_settings())
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready, timeout=60)
        await send(pilot, "Hello")
        await wait_for(pilot, lambda: not app.chat.busy and 1 in app.conversation.tree.turns)
        old = app.options.cache

        await submit_cache_form(pilot, TOO_BIG)
        await wait_for(pilot, lambda: any(isinstance(e, OptionsRefused) for e in seen))
        await pilot.pause(0.1)
        assert app.options.cache == engines[0].core.options.cache == old  # the app and the engine
        saved = read_settings().settings
        assert (saved.max_kv_size, saved.keep) == (None, None)  # the file: nothing written
        assert app.conversation.tree.path() == [1]  # the conversation goes on
        notices = [str(n.render()) for n in app.query(Notice)]
        assert any("--keep 1000" in n and "stay as they were" in n for n in notices)

        await submit_cache_form(pilot, {"size": "256", "keep": ""})
        await wait_for(pilot, lambda: app.options.cache.max_kv_size == 256)
        assert engines[0].core.options.cache == app.options.cache == CacheSettings(max_kv_size=256)
        saved = read_settings().settings
        assert (saved.max_kv_size, saved.keep) == (256, None)
        assert app.conversation.tree.path() == [] and engines[0].core.service.cache.capacity == 256
