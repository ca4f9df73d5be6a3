"""The palette's "Attach a file": a path, completed as it is typed, attached to the next message."""

from collections.abc import Iterable
from typing import Optional

from textual.app import App, SystemCommand
from textual.suggester import Suggester

from .attachments import AttachmentError, read_attachment
from .path_completion import complete_path
from .screens.form import FormScreen
from .widgets.composer import Composer


class PathSuggester(Suggester):
    """Suggests the rest of a path as far as every file that fits agrees (→ takes it)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> Optional[str]:
        completed = complete_path(value).text
        return completed if value and len(completed) > len(value) else None


def commands(app: App) -> Iterable[SystemCommand]:
    yield SystemCommand(
        "Attach a file",
        "A text file's contents go into the next message (or type /file PATH in the box; Tab completes)",
        lambda: attach_a_file(app),
    )


def _unreadable(path: str) -> Optional[str]:
    try:
        read_attachment(path)
    except AttachmentError as exc:
        return str(exc)
    return None


def attach_a_file(app: App) -> None:
    async def done(values: Optional[dict]) -> None:
        if values is not None:
            composer = app.chat.query_one(Composer)
            await composer.attach(values["path"])
            composer.prompt.focus()

    app.push_screen(
        FormScreen(
            "Attach a file",
            [("path (→ completes it)", "path", "")],
            hint="A UTF-8 text file that fits in the KV cache.",
            validate=lambda v: _unreadable(v["path"]) if v["path"].strip() else "Give the path of a file.",
            suggesters={"path": PathSuggester()},
        ),
        done,
    )
