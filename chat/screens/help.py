"""The help screen: the keys, and what each view teaches (the view rows come from `chat/views.py`)."""

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from ..user_settings import settings_path
from ..views import ViewSpec, by_key

KEYS = """\
# glasschat

**Keys**

| key | does |
|---|---|
| Enter | send the message |
| Shift+Enter, Ctrl+J | new line in the message |
| ↑ / ↓ | on the first / last line: your earlier messages (this chat's, then older ones); the draft is kept |
| Esc | stop the reply (the partial reply is kept) |
| Ctrl+N | new conversation (clears the KV cache) |
| Ctrl+O | saved conversations: open, rename, delete, export |
| Ctrl+L | models: load another (on disk, in the Hub cache, or a Hub id) in a new conversation; Esc stops a download |
| Ctrl+P | command palette: system prompt, sampling, cache size, views, theme, model info |
{views}
| Ctrl+T | show token ids in the Next token panel |
| Ctrl+Y | copy the last reply (or focus a message and press c) |
| Ctrl+R | regenerate: a new reply to the focused message (the last by default); the old one stays a branch |
| ← / → | on a message showing ‹ 2/3 ›: the other branches (or click the arrows) |
| E | on a focused message (any, not only the last): edit it in the box; sending makes a new branch beside it, Esc cancels |
| F1, ? | this help |
| Ctrl+Q | quit |

**What the views show**

{about}

The attention and lens views make the engine look inside one step every 0.4 s while
they are open; closed, they cost nothing. When the views are taller than the window,
the side column scrolls, and a bar at its edge names the views out of sight (click it).

**Settings that stay**

Sampling, reply length, cache size, KV bits, the system prompt, the open views and
the theme are kept in `{settings}` when you change them here; a command-line flag
beats the file for one run. Model info (Ctrl+P) shows this run's settings.
"""


def help_text(views: list[ViewSpec]) -> str:
    """The help page, its view rows made from the table of views."""
    rows = []
    for spec in by_key(views):
        hint = f" ({spec.focus_keys})" if spec.focus_keys else ""
        rows.append(f"| {spec.key.upper()} | show or hide {spec.title}{hint} |")
    about = "\n".join(f"- **{spec.title}**: {spec.about}" for spec in views)
    return KEYS.format(views="\n".join(rows), about=about, settings=settings_path())


class HelpScreen(ModalScreen):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 84; max-width: 95%; height: 80%; border: round $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,f1,q,question_mark", "dismiss", "Close")]

    def __init__(self, views: list[ViewSpec]):
        super().__init__()
        self.text = help_text(views)

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(self.text)
