"""The Hugging Face Hub: where its cache is, which models it holds, and a download that reports bytes and stops.

A download runs `snapshot_download` on a thread of its own, so the caller (the engine
thread) can report progress and give up at once when the user cancels. Progress comes
from huggingface_hub's own progress bars: it accepts a `tqdm_class`, and ours counts
the bytes instead of drawing, and raises at the next chunk once cancelled, which stops
every transfer. With `HF_HUB_OFFLINE=1` only the cache is read. No MLX here.
"""

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from model.errors import ModelError
from model.loading.describe import (
    ModelCard,
    describe_path,
    folder_architecture,
    folder_problem,
    folder_quantization,
    problem_line,
)
from model.loading.tokenizer_checks import read_json

HUB_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.jinja"]  # what a folder model needs, no other formats
POLL_S = 0.25  # how often a waiting caller hears about progress
RATE_WINDOW_S = 3.0  # the speed shown is over the last few seconds, so a stall shows quickly


class DownloadCancelled(ModelError):
    """The user stopped a download."""


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps models. Read at each call (its own constant is fixed at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def cached_models(cache_dir: Optional[Path] = None) -> list[ModelCard]:
    """Every model in the Hub cache that glasschat could open: folders with a config.json, and GGUF files."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir or hub_cache_dir())
    except (CacheNotFound, OSError):
        return []
    cards = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        newest = max(repo.revisions, key=lambda r: r.last_modified)
        files = {f.file_name: f for f in newest.files}
        if "config.json" in files:
            cards.append(_folder_card(repo.repo_id, newest.snapshot_path, repo.size_on_disk))
        for name in sorted(n for n in files if n.endswith(".gguf")):
            cards.append(describe_path(files[name].file_path, name=f"{repo.repo_id}/{name}", where="Hub cache"))
    return cards


def _folder_card(repo_id: str, snapshot: Path, size: int) -> ModelCard:
    try:
        config = read_json(snapshot / "config.json")
        if not isinstance(config, dict):
            raise ModelError("config.json is not a JSON object of settings")
    except (OSError, ModelError) as exc:
        return ModelCard(repo_id, repo_id, size_bytes=size, where="Hub cache", problem=problem_line(exc, ""))
    weights = any(snapshot.glob("*.safetensors"))
    return ModelCard(
        repo_id,
        repo_id,
        folder_architecture(config),
        size,
        folder_quantization(config, snapshot),
        "Hub cache",
        folder_problem(snapshot, config) if weights else "weights not downloaded",
    )


@dataclass(frozen=True)
class Transfer:
    """A download's progress, as the user sees it."""

    repo_id: str
    done_bytes: int
    total_bytes: int  # 0 while unknown; grows as each file's size becomes known
    bytes_per_s: float


class RateMeter:
    """Bytes per second over the last few seconds. The clock is passed in, so tests can drive it."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0


def _counting_bars(cancelled: Callable[[], bool]) -> tuple[type, list]:
    """A tqdm class that counts instead of drawing (every bar it makes is kept in the list) and stops when cancelled."""
    bars: list = []

    class CountingBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)  # huggingface_hub's own bars take a name; tqdm does not
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed with the bar
            kwargs["mininterval"] = 3600  # never redraw: nothing reads it
            super().__init__(*args, **kwargs)
            bars.append(self)

        def update(self, n=1):
            if cancelled():
                raise DownloadCancelled("The download was cancelled.")
            return super().update(n)

        def close(self):
            super().close()
            self.fp.close()

    return CountingBar, bars


def _bytes_so_far(bars: list) -> tuple[int, int]:
    """Bytes written and bytes expected, from the byte-counting bars (the file-count bar is not one)."""
    byte_bars = [b for b in bars if getattr(b, "unit", "") == "B"]
    if not byte_bars:
        return 0, 0
    return max(int(b.n) for b in byte_bars), max(int(b.total or 0) for b in byte_bars)


def fetch(
    repo_id: str,
    report: Callable[[Transfer], None] = lambda _: None,
    cancelled: Callable[[], bool] = lambda: False,
    cache_dir: Optional[Path] = None,
    patterns: Optional[list[str]] = None,
    download: Optional[Callable] = None,
) -> Path:
    """The snapshot folder of `repo_id`, downloading what is missing; one line (ModelError) if it can't.

    `report` is called on the caller's thread about every POLL_S with the bytes so far.
    `download` stands in for `snapshot_download` (tests)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    download = download or snapshot_download
    cache_dir = cache_dir or hub_cache_dir()
    patterns = patterns or HUB_FILES
    try:
        if offline():
            return Path(download(repo_id, allow_patterns=patterns, cache_dir=cache_dir, local_files_only=True))
        bar_class, bars = _counting_bars(cancelled)
        result: dict = {}

        def run() -> None:
            try:
                result["path"] = download(repo_id, allow_patterns=patterns, cache_dir=cache_dir, tqdm_class=bar_class)
            except BaseException as exc:  # handed to the waiting thread, which raises it there
                result["error"] = exc

        thread = threading.Thread(target=run, name="glasschat-download", daemon=True)
        thread.start()
        meter = RateMeter()
        while thread.is_alive():
            thread.join(POLL_S)
            if cancelled():
                # The download thread stops at its next chunk; nobody waits for it.
                raise DownloadCancelled(f"Download of {repo_id} cancelled.")
            done, total = _bytes_so_far(bars)
            report(Transfer(repo_id, done, total, meter.add(time.monotonic(), done)))
        if "error" in result:
            raise result["error"]
        return Path(result["path"])
    except DownloadCancelled:
        raise DownloadCancelled(f"Download of {repo_id} cancelled.")
    except LocalEntryNotFoundError:
        raise ModelError(
            f"'{repo_id}' is not in the local Hub cache and the Hub can't be reached: "
            "connect once to download it, or pass a local path with --model."
        )
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(
            f"Could not fetch '{repo_id}' from the Hub ({type(exc).__name__}); check the id and the network."
        )
