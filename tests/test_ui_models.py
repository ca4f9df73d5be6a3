"""The Models screen over a Hub cache written by the test (no network): listing, switching, a download's
progress bar, cancelling it, and the line for a Hub id that is neither cached nor reachable."""

import json
import os

import gguf
import pytest
from hub_cache import COMMIT, SteppedDownload, tiny_gguf, write_cached_repo
from textual.widgets import DataTable, Input, Label
from ui_helpers import asked, fake_app, screen_text, wait_for

from chat.formatting import human_bytes
from chat.launch import read_settings
from chat.recorder import ConversationRecorder
from chat.screens.models import ModelsScreen
from chat.store import Store
from chat.user_settings import UserSettings
from chat.widgets.download_bar import DownloadBar
from chat.widgets.prompt_input import PromptInput
from chat.widgets.transcript import AssistantMessage, Notice, UserMessage
from chat.widgets.welcome import Welcome
from model.loading.default_model import default_model_path

QWEN_CONFIG = json.dumps({"model_type": "qwen3", "torch_dtype": "bfloat16"}).encode()
_HEADER = json.dumps({"w": {"dtype": "F32", "shape": [750], "data_offsets": [0, 3000]}}).encode()
QWEN_WEIGHTS = len(_HEADER).to_bytes(8, "little") + _HEADER + b"\1" * 3000  # a real safetensors file, 3 KB of data


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A cache with a folder model and a GGUF repo; the settings file in a fresh config dir."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    write_cached_repo(cache, "org/tiny-qwen", {"config.json": QWEN_CONFIG, "model.safetensors": QWEN_WEIGHTS})
    q4 = tiny_gguf(tmp_path / "src.gguf", "gemma3", gguf.LlamaFileType.MOSTLY_Q4_K_M).read_bytes()
    write_cached_repo(cache, "org/tiny-gguf", {"tiny-Q4_K_M.gguf": q4})
    return cache


def rows(app) -> list[list[str]]:
    table = app.screen.query_one(DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def open_models(pilot, key="ctrl+l") -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.chat.ready)
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app.screen.cards)


async def load_by_field(pilot, text: str) -> None:
    field = pilot.app.screen.query_one("#source", Input)
    field.value = text
    field.focus()
    await pilot.press("enter")


def notices(app) -> list[str]:
    return [str(n.render()) for n in app.chat.transcript.query(Notice)]


async def send(pilot, text):
    pilot.app.query_one(PromptInput).focus()
    pilot.app.query_one(PromptInput).insert(text)
    await pilot.press("enter")


@pytest.mark.asyncio
async def test_the_screen_lists_the_default_the_recent_and_the_hub_cache(hub_cache, tmp_path):
    local = tiny_gguf(tmp_path / "mine.gguf", "qwen3", gguf.LlamaFileType.MOSTLY_Q8_0)
    recent = (str(local), "org/tiny-qwen", "gone/away", str(tmp_path / "deleted.gguf"))
    read_settings().save(UserSettings(recent=recent))
    app, _ = fake_app(settings_file=read_settings())
    async with app.run_test(size=(140, 45)) as pilot:
        app.query_one(PromptInput).cursor_blink = False
        await open_models(pilot)
        table = rows(app)
        gguf_path = hub_cache / "models--org--tiny-gguf" / "snapshots" / COMMIT / "tiny-Q4_K_M.gguf"
        assert table == [
            [
                "●",
                "SmolLM2-135M-Instruct Q4_1",
                "llama",
                human_bytes(os.path.getsize(default_model_path())),
                "Q4_1",
                "default",
            ],
            ["", "mine.gguf", "qwen3", human_bytes(os.path.getsize(local)), "Q8_0", "recent"],
            [
                "",
                "org/tiny-qwen",
                "qwen3",
                human_bytes(len(QWEN_CONFIG) + len(QWEN_WEIGHTS)),
                "bfloat16",
                "recent · Hub cache",
            ],
            ["", "gone/away", "?", "–", "?", "recent · not in the Hub cache: loading downloads it"],
            ["", "deleted.gguf", "?", "–", "?", "recent · not found"],
            [
                "",
                "org/tiny-gguf/tiny-Q4_K_M.gguf",
                "gemma3",
                human_bytes(os.path.getsize(gguf_path)),
                "Q4_K_M",
                "Hub cache",
            ],
        ]
        assert f"Hub cache: {hub_cache}" in str(app.screen.query_one("#cache-dir", Label).render())
        await pilot.press("escape")
        assert app.screen is app.chat


@pytest.mark.asyncio
async def test_ctrl_m_opens_it_where_the_terminal_tells_it_from_enter(hub_cache):
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        app.query_one(PromptInput).cursor_blink = False
        await wait_for(pilot, lambda: app.chat.ready)
        # Enter (a carriage return, which is Ctrl+M in most terminals) sends the message.
        await send(pilot, "Hello")
        await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))
        assert asked(app) == ["Hello"] and app.screen is app.chat
        # A terminal with the kitty keyboard protocol sends Ctrl+M as its own key.
        await open_models(pilot, "ctrl+m")
        await pilot.press("escape")
        assert "Models" in [c.title for c in app.chat.commands()]


@pytest.mark.asyncio
async def test_switching_saves_the_chat_and_starts_a_new_one_on_the_new_model(hub_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the cached model resolves from the cache alone
    store = Store(tmp_path / "chats.db")
    recorder = ConversationRecorder(store, "default", {})
    app, holder = fake_app(recorder=recorder, settings_file=read_settings())
    async with app.run_test(size=(140, 45)) as pilot:
        app.query_one(PromptInput).cursor_blink = False
        await wait_for(pilot, lambda: app.chat.ready)
        await send(pilot, "Hello")
        await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))

        await open_models(pilot)
        row = [r[1] for r in rows(app)].index("org/tiny-qwen")
        app.screen.query_one(DataTable).move_cursor(row=row)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.options.model == "org/tiny-qwen" and app.chat.ready)

        assert not app.query(AssistantMessage) and not app.query(UserMessage)
        assert notices(app) == ["Now chatting with org/tiny-qwen. The previous conversation is saved (Ctrl+O)."]
        assert app.query_one(Welcome).info["source"] == "org/tiny-qwen"
        assert holder["engine"].options.model == "org/tiny-qwen"
        assert read_settings().settings.recent == ("org/tiny-qwen",)

        await send(pilot, "Hi again")
        await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))
        first, second = sorted(store.conversations(), key=lambda c: c.id)
        assert [m.content for m in store.messages(first.id)][0] == "Hello"
        assert [m.content for m in store.messages(second.id)][0] == "Hi again"
        models = [store.conversation(c.id)["model"] for c in (first, second)]
        assert models == ["default", "org/tiny-qwen"]


@pytest.mark.asyncio
async def test_a_download_shows_its_progress_and_esc_cancels_it(hub_cache, tmp_path):
    mb = 1 << 20
    files = {"config.json": QWEN_CONFIG}
    download = SteppedDownload(hub_cache, "org/new", files, chunks=4, chunk=2 * mb)
    app, holder = fake_app(download=download)
    async with app.run_test(size=(140, 45)) as pilot:
        app.query_one(PromptInput).cursor_blink = False
        await open_models(pilot)
        await load_by_field(pilot, "org/new")
        bar = app.query_one(DownloadBar)

        for chunk in (1, 2):
            download.allow()
            want = chunk * 2 * mb
            await wait_for(pilot, lambda want=want: bar.latest is not None and bar.latest.done_bytes == want)
            assert bar.display and bar.bar.total == 8 * mb and bar.bar.progress == chunk * 2 * mb
            shown = "\n".join(screen_text(app))
            assert "downloading org/new" in shown and f"{chunk * 2}.0 MB of 8.0 MB · " in shown
            assert "/s · Esc cancels" in shown

        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.chat.switching)
        assert download.stopped.wait(30)
        assert not bar.display
        [line] = [n for n in notices(app) if "org/new" in n]
        assert line == "Download of org/new cancelled. Still on default (SmolLM2-135M-Instruct Q4_1)."
        assert app.options.model is None and app.chat.ready

        # Nothing was lost: the chat goes on with the model it had.
        await send(pilot, "Still there?")
        await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))

        # A download that finishes loads the model.
        download = holder["engine"].download = SteppedDownload(hub_cache, "org/new", files, chunks=2, chunk=mb)
        await open_models(pilot)
        await load_by_field(pilot, "org/new")
        download.allow(2)
        # The options are adopted before ModelReady reaches the bar: wait for both.
        await wait_for(pilot, lambda: app.options.model == "org/new" and app.chat.ready and not bar.display)


@pytest.mark.asyncio
async def test_a_hub_id_offline_and_not_cached_is_one_line(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app, _ = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        app.query_one(PromptInput).cursor_blink = False
        await open_models(pilot)
        assert "offline" in str(app.screen.query_one("#cache-dir", Label).render())

        # Neither a path nor a Hub id: said in the screen, which stays open.
        await load_by_field(pilot, "./no/such/model.gguf")
        error = str(app.screen.query_one("#models-error", Label).render())
        assert (
            error == "No model at './no/such/model.gguf': give a .gguf file, a model folder, or a Hub id like org/name."
        )
        assert isinstance(app.screen, ModelsScreen)

        await load_by_field(pilot, "nobody/not-cached")
        await wait_for(pilot, lambda: not app.chat.switching)
        expected = (
            "'nobody/not-cached' is not in the local Hub cache and the Hub can't be reached: connect once to "
            "download it, or pass a local path with --model. Still on default (SmolLM2-135M-Instruct Q4_1)."
        )
        assert notices(app)[-1] == expected
        await pilot.pause(0.1)
        assert sum("not in the local Hub cache" in row for row in screen_text(app)) == 1
        assert app.options.model is None and app.chat.ready


@pytest.mark.asyncio
async def test_a_hub_id_on_the_command_line_downloads_the_same_way(hub_cache):
    """--model org/new at start: the same progress bar; Esc cancels it; the Models screen then loads another."""
    download = SteppedDownload(hub_cache, "org/new", {"config.json": QWEN_CONFIG}, chunks=2, chunk=1 << 20)
    app, _ = fake_app(download=download, model="org/new")
    async with app.run_test(size=(140, 45)) as pilot:
        app.query_one(PromptInput).cursor_blink = False
        bar = app.query_one(DownloadBar)
        download.allow()
        await wait_for(pilot, lambda: bar.latest is not None and bar.latest.done_bytes == 1 << 20)
        assert "1.0 MB of 2.0 MB" in "\n".join(screen_text(app))

        await pilot.press("escape")
        await wait_for(pilot, lambda: "Download of org/new cancelled." in notices(app))
        assert download.stopped.wait(30) and not bar.display and not app.chat.ready
        assert any("no model loaded: Ctrl+L picks one" in row for row in screen_text(app))

        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app.screen.cards)
        assert rows(app)[0][:2] == ["", "SmolLM2-135M-Instruct Q4_1"]  # nothing is loaded, so nothing is marked
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.ready)
        assert app.options.model is None and app.query_one(Welcome).info["source"].startswith("default")
