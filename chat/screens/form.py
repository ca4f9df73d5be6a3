"""A small modal form: labelled inputs, Enter to apply, Esc to cancel."""

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label


class FormScreen(ModalScreen[dict | None]):
    DEFAULT_CSS = """
    FormScreen { align: center middle; }
    FormScreen > Vertical { width: 70; max-width: 95%; height: auto; border: round $accent; background: $surface; padding: 1 2; }
    FormScreen Label { margin-top: 1; }
    FormScreen .hint { color: $text-muted; width: 100%; }
    FormScreen .error { color: $error; width: 100%; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: list[tuple[str, str, str]], hint: str = "", validate=None, suggesters=None):
        super().__init__()
        self.form_title, self.fields, self.hint, self.validate = title, fields, hint, validate
        self.suggesters = suggesters or {}  # a field's key -> its Suggester (→ takes the suggestion)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"[b]{self.form_title}[/b]")
            if self.hint:
                yield Label(self.hint, classes="hint")
            for label, key, value in self.fields:
                yield Label(label)
                yield Input(value=value, id=f"field-{key}", suggester=self.suggesters.get(key))
            yield Label("", id="form-error", classes="error")

    def on_input_submitted(self) -> None:
        values = {key: self.query_one(f"#field-{key}", Input).value for _, key, _ in self.fields}
        error = self.validate(values) if self.validate else None
        if error:
            self.query_one("#form-error", Label).update(error)
            return
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)
