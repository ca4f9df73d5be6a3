"""Saved conversations: open, rename, delete, export, or start a new one; or search every message of every one.

The search field (`/`) lists the messages that hold every word typed, best first,
each with its conversation and the matching line; Enter opens the conversation at
that message. The list stays focused when the screen opens, so its one-letter keys work.
"""

import time
from pathlib import Path
from typing import Optional

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from ..export import conversation_markdown
from ..search_index import SearchHit
from ..store import Store, StoreError
from .form import FormScreen

HINT = "Enter open · / search · n new · r rename · d delete · e export to Markdown · Esc close"


def _age(t: float) -> str:
    minutes = (time.time() - t) / 60
    if minutes < 60:
        return f"{minutes:.0f} min ago"
    if minutes < 60 * 48:
        return f"{minutes / 60:.0f} h ago"
    return time.strftime("%Y-%m-%d", time.localtime(t))


def hit_prompt(hit: SearchHit) -> Text:
    """A search hit in the list: its conversation, who wrote it and when, then the matching line."""
    who = "you" if hit.role == "user" else "the model"
    line = Text.assemble((hit.title, "bold"), (f"  · {who} · {_age(hit.created)}", "dim"), "\n  ")
    for text, matched in hit.parts():
        line.append(text, "bold reverse" if matched else "")
    return line


class ConversationsScreen(ModalScreen):
    """Dismisses with ("open", id), ("found", (conversation id, message id)), ("new", None) or None."""

    DEFAULT_CSS = """
    ConversationsScreen { align: center middle; }
    ConversationsScreen > Vertical { width: 90; max-width: 95%; height: 80%; border: round $accent; background: $surface; padding: 0 1; }
    ConversationsScreen OptionList { height: 1fr; }
    ConversationsScreen .hint { color: $text-muted; }
    ConversationsScreen #search { margin: 1 0 0 0; }
    ConversationsScreen #search-problem { color: $warning; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("slash", "search", "Search"),
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
            yield Label(HINT, classes="hint")
            yield Input(placeholder="/ search every message of every conversation", id="search")
            yield Label("", id="search-problem")
            yield OptionList(id="conversations")

    def on_mount(self) -> None:
        self.refresh_list()
        self.query_one(OptionList).focus()

    def refresh_list(self) -> None:
        """The conversations, newest first; or, while the search field has words, the messages that hold them."""
        options = self.query_one(OptionList)
        options.clear_options()
        words = self.query_one("#search", Input).value
        problem = ""
        if words.strip():
            try:
                hits = self.store.search(words)
            except StoreError as exc:
                hits, problem = [], str(exc)
            for hit in hits:
                options.add_option(Option(hit_prompt(hit), id=f"{hit.conversation_id}:{hit.message_id}"))
            if not hits and not problem:
                problem = "No saved message holds all of those words."
        else:
            for c in self.store.conversations():
                options.add_option(
                    Option(f"{c.title}  [dim]· {c.messages} messages · {_age(c.updated)}[/dim]", id=str(c.id))
                )
        self.query_one("#search-problem", Label).update(problem)
        if options.option_count:
            options.highlighted = 0

    def _selected(self):
        """The conversation highlighted (a search hit's own conversation)."""
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return None
        return int(options.get_option_at_index(options.highlighted).id.split(":")[0])

    def _result(self, option_id: str) -> tuple:
        if ":" in option_id:
            conversation, message = option_id.split(":")
            return ("found", (int(conversation), int(message)))
        return ("open", int(option_id))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self._result(event.option.id))

    @on(Input.Changed, "#search")
    def search_changed(self) -> None:
        self.refresh_list()

    @on(Input.Submitted, "#search")
    def open_first_hit(self) -> None:
        """Enter in the field opens the hit highlighted in the list (the best one, unless ↓ moved it)."""
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            self.dismiss(self._result(options.get_option_at_index(options.highlighted).id))

    def on_key(self, event) -> None:
        """↓ and ↑ in the search field move through the hits, so Enter opens the one picked."""
        if self.focused is self.query_one("#search", Input) and event.key in ("down", "up"):
            options = self.query_one(OptionList)
            (options.action_cursor_down if event.key == "down" else options.action_cursor_up)()
            event.stop()

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_close(self) -> None:
        """Esc: clears the search first (back to the conversations), then closes."""
        search = self.query_one("#search", Input)
        if search.value:
            search.value = ""
            self.query_one(OptionList).focus()
        else:
            self.dismiss(None)

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
