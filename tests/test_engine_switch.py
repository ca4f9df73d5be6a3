"""The engine loads another model while it runs: a new conversation on it, the old model kept if the new one fails."""

import pytest
from engine_harness import SyncChat
from hub_cache import SteppedDownload
from tiny_models import write_chat_folder

from model.runtime.events import DownloadProgress, ModelReady, SwitchFailed

MAX_TOKENS = 8


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("switch")
    write_chat_folder(root / "a", seed=1)
    write_chat_folder(root / "b", "qwen2", seed=2)
    return root / "a", root / "b"


def reply(engine: SyncChat, text: str) -> tuple[int, ...]:
    return engine.turn(text)[2].token_ids


def test_a_switch_starts_a_new_conversation_on_the_new_model(folders):
    a, b = folders
    engine = SyncChat(model=str(a), max_tokens=MAX_TOKENS)
    reply(engine, "Hello!")
    assert engine.cache.length > 0

    start = len(engine.events)
    engine.switch_model(str(b))
    ready = [e for e in engine.events[start:] if isinstance(e, ModelReady)]
    assert [e.info["source"] for e in ready] == [str(b)]
    assert ready[0].info["architecture"] == "qwen2" and ready[0].cache.tokens == 0
    assert engine.core.options.model == engine.conversation.options.model == str(b)

    # The same reply a fresh engine on b gives: nothing of a's conversation or cache is left.
    fresh = SyncChat(model=str(b), max_tokens=MAX_TOKENS)
    assert reply(engine, "Hello!") == reply(fresh, "Hello!")
    started = engine.turn("How are you?")[0]
    assert started.reused_tokens == fresh.turn("How are you?")[0].reused_tokens


def test_a_model_that_cannot_load_leaves_the_one_in_use(folders, tmp_path):
    a, _ = folders
    engine = SyncChat(model=str(a), max_tokens=MAX_TOKENS)
    first = reply(engine, "Hello!")
    start = len(engine.events)
    engine.switch_model(str(tmp_path / "nothing-here"))
    [failed] = [e for e in engine.events[start:] if isinstance(e, SwitchFailed)]
    assert "No model at" in failed.message and "\n" not in failed.message
    assert not [e for e in engine.events[start:] if isinstance(e, ModelReady)]
    # Still a's conversation: the next turn reuses the cache.
    started, _, _ = engine.turn("How are you?")
    assert started.reused_tokens > 0
    engine.reset(None)
    assert reply(engine, "Hello!") == first


def contents(folder):
    return {f.name: f.read_bytes() for f in folder.iterdir()}


def hooked(engine: SyncChat, hook) -> None:
    engine.on_event = hook


def test_a_hub_download_reports_bytes_and_stops_when_cancelled(folders, tmp_path, monkeypatch):
    import huggingface_hub

    a, b = folders
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    engine = SyncChat(model=str(a), max_tokens=MAX_TOKENS)

    download = SteppedDownload(cache, "org/tiny", contents(b))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)

    def next_chunk_once_reported(event):
        if isinstance(event, DownloadProgress) and event.done_bytes == download.allowed * download.chunk:
            download.allow()

    hooked(engine, next_chunk_once_reported)
    download.allow()
    start = len(engine.events)
    engine.switch_model("org/tiny")
    seen = [e for e in engine.events[start:] if isinstance(e, DownloadProgress)]
    done = [e.done_bytes for e in seen]
    assert {e.repo_id for e in seen} == {"org/tiny"} and {e.total_bytes for e in seen} == {4000}
    assert done == sorted(done) and {1000, 2000, 3000, 4000} <= set(done)
    [ready] = [e for e in engine.events[start:] if isinstance(e, ModelReady)]
    assert ready.info["source"] == "org/tiny" and ready.info["architecture"] == "qwen2"

    # Cancelled after two chunks: the download thread stops at its next chunk, the model in use stays.
    download = SteppedDownload(cache, "org/other", contents(b))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)

    def cancel_after_two(event):
        if isinstance(event, DownloadProgress) and event.done_bytes >= 2000:
            engine.cancel()
        else:
            next_chunk_once_reported(event)

    hooked(engine, cancel_after_two)
    download.allow()
    start = len(engine.events)
    engine.switch_model("org/other")
    [failed] = [e for e in engine.events[start:] if isinstance(e, SwitchFailed)]
    assert failed.message == "Download of org/other cancelled." and failed.model == "org/other"
    assert download.stopped.wait(30)
    assert max(e.done_bytes for e in engine.events[start:] if isinstance(e, DownloadProgress)) < 4000
    assert engine.core.options.model == engine.conversation.options.model == "org/tiny"
    engine.turn("Hello!")  # still answers, on the model it had
