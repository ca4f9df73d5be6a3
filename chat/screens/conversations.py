"""Saved conversations: open, rename, delete, export, or start a new one."""

import time
from pathlib import Path
from typing import Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from ..export import conversation_markdown
from ..store import Store, StoreError
from .form import FormScreen


def _age(t: float) -> str:
    minutes = (time.time() - t) / 60
    if minutes < 60:
        return f"{minutes:.0f} min ago"
    if minutes < 60 * 48:
        return f"{minutes / 60:.0f} h ago"
    return time.strftime("%Y-%m-%d", time.localtime(t))


class ConversationsScreen(ModalScreen):
    """Dismisses with ("open", id), ("new", None) or None."""

    DEFAULT_CSS = """
    ConversationsScreen { align: center middle; }
    ConversationsScreen > Vertical { width: 90; max-width: 95%; height: 80%; border: round $accent; background: $surface; padding: 0 1; }
    ConversationsScreen OptionList { height: 1fr; }
    ConversationsScreen .hint { color: $text-muted; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("n", "new", "New"),
        Binding("r", "rename", "Rename"),
        Binding("d", "delete", "Delete"),
        Binding("e", "export", "Export"),
    ]

    def __init__(self, store: Store):
        super().__init__()
        self.store = store

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Conversations[/b]")
            yield Label("Enter open · n new · r rename · d delete · e export to Markdown · Esc close", classes="hint")
            yield OptionList(id="conversations")

    def on_mount(self) -> None:
        self.refresh_list()

    def refresh_list(self) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        for c in self.store.conversations():
            options.add_option(
                Option(f"{c.title}  [dim]· {c.messages} messages · {_age(c.updated)}[/dim]", id=str(c.id))
            )
        if options.option_count:
            options.highlighted = 0

    def _selected(self):
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return None
        return int(options.get_option_at_index(options.highlighted).id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(("open", int(event.option.id)))

    def action_new(self) -> None:
        self.dismiss(("new", None))

    def action_rename(self) -> None:
        chosen = self._selected()
        if chosen is None:
            return

        def done(values: Optional[dict]) -> None:
            if values and values["title"].strip():
                self.store.rename(chosen, values["title"].strip())
                self.refresh_list()

        self.app.push_screen(FormScreen("Rename", [("title", "title", self.store.conversation(chosen)["title"])]), done)

    def action_delete(self) -> None:
        chosen = self._selected()
        if chosen is None:
            return

        def done(values: Optional[dict]) -> None:
            if values is not None and values["confirm"].strip().lower() in ("y", "yes"):
                self.store.delete(chosen)
                self.refresh_list()

        self.app.push_screen(FormScreen("Delete this conversation?", [("type yes to delete it", "confirm", "")]), done)

    def action_export(self) -> None:
        chosen = self._selected()
        if chosen is None:
            return
        try:
            path = Path.cwd() / f"glasschat-{chosen}.md"
            path.write_text(conversation_markdown(self.store, chosen), encoding="utf-8")
            self.notify(f"Exported to {path}")
        except (OSError, StoreError) as exc:
            self.notify(f"Export failed: {exc}", severity="error")
