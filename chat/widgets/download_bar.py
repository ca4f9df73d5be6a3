"""A model download in progress: a bar, the bytes so far and the speed, and how to stop it.

Shown above the status line only while the engine reports a Hub download (at start
with `--model org/name`, or after a pick in the Models screen); gone once the model
is ready, could not be loaded, or the download was cancelled (Esc).
"""

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from model.runtime.events import DownloadProgress, ModelFailed, ModelReady, SwitchFailed

from ..engine_view import EngineView, handles
from ..formatting import human_bytes


def download_numbers(event: DownloadProgress) -> str:
    """'312.0 MB of 1.2 GB · 24.5 MB/s'; the total is left out while it is unknown."""
    done = human_bytes(event.done_bytes)
    amount = f"{done} of {human_bytes(event.total_bytes)}" if event.total_bytes else done
    return f"{amount} · {human_bytes(int(event.bytes_per_s))}/s"


class DownloadBar(EngineView, Horizontal):
    DEFAULT_CSS = """
    DownloadBar { height: 1; padding: 0 1; background: $panel; display: none; }
    DownloadBar #download-name { width: auto; max-width: 50%; margin-right: 1; }
    DownloadBar ProgressBar { width: auto; margin-right: 1; }
    DownloadBar ProgressBar Bar { width: 16; }
    DownloadBar #download-numbers { width: 1fr; color: $text-muted; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.latest: DownloadProgress | None = None
        self.name_label = Label("", id="download-name")
        self.bar = ProgressBar(total=None, show_eta=False, id="download-progress")
        self.numbers = Label("", id="download-numbers")

    def compose(self) -> ComposeResult:
        yield self.name_label
        yield self.bar
        yield self.numbers

    @handles(DownloadProgress)
    def progress(self, event: DownloadProgress) -> None:
        self.latest = event
        self.display = True
        self.name_label.update(f"downloading {event.repo_id}")
        # Without a total yet the bar pulses instead of claiming a fraction.
        self.bar.update(total=event.total_bytes or None, progress=event.done_bytes)
        self.numbers.update(f"{download_numbers(event)} · Esc cancels")

    @handles(ModelReady, ModelFailed, SwitchFailed)
    def finished(self, _event) -> None:
        self.latest = None
        self.display = False
