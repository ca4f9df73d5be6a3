"""The first screen of a conversation: which model is loaded, three prompts to try, and where to look.

It sits in the transcript until the first message is sent and comes back with
each new conversation. An example is picked by typing its number and pressing
Enter (a single digit alone is never a message anyone means to send), or by a
click.
"""

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.markup import escape
from textual.message import Message
from textual.widgets import Static

from ..formatting import human_bytes

# Each shows something: a poem's line breaks, a short greedy fact, a reply long enough to watch decode.
EXAMPLES = (
    "Write a haiku about the sea.",
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
)
KEYS = (
    ("F1", "what each panel shows"),
    ("F6–F9", "more views: the KV cache grid, attention, the logit lens, confidence"),
    ("Ctrl+L", "another model: on disk, in the Hub cache, or by Hub id"),
    ("Ctrl+P", "settings, the theme, and everything else"),
    ("↑", "your earlier messages"),
)


def model_line(info: dict) -> Text:
    """The model's name, then its size and where it runs, on a second line."""
    if not info:
        return Text("Loading the model…", style="italic")
    source = str(info.get("source", "the model"))
    name = source[len("default (") : -1] if source.startswith("default (") and source.endswith(")") else source
    return Text.assemble(
        (name, "bold"),
        "\n",
        (f"{info.get('parameters', 0) / 1e6:.0f}M parameters", ""),
        ("  ·  ", "dim"),
        (f"{info.get('weight_dtype', '?')} weights, {human_bytes(info.get('weight_bytes', 0))}", ""),
        ("  ·  ", "dim"),
        (where_it_runs(info), ""),
    )


def where_it_runs(info: dict) -> str:
    """The device, and the code path where it is not that device's own (GLASSCHAT_PATH)."""
    backend = info.get("backend", "cpu")
    path = info.get("compute_path", backend)
    if backend == "gpu":
        return "on the GPU"
    if path == "gpu":
        return "on the CPU, through the GPU's path (GLASSCHAT_PATH=gpu)"
    return f"on the CPU with {info.get('blas', 'its BLAS')}"


class Example(Static):
    """One example prompt; a click sends it."""

    DEFAULT_CSS = """
    Example { padding: 0 1; width: auto; }
    Example:hover { background: $accent 25%; }
    """

    def __init__(self, number: int, text: str):
        super().__init__(f"[bold $accent]{number}[/]  {escape(text)}")
        self.text = text

    def on_click(self) -> None:
        self.post_message(Welcome.Picked(self.text))


class Welcome(Vertical):
    DEFAULT_CSS = """
    Welcome {
        height: auto;
        border: round $accent 60%;
        border-title-style: bold;
        padding: 0 1;
        margin: 1 0 0 0;
    }
    Welcome .hint { color: $text-muted; margin: 1 0 0 0; }
    Welcome .keys { color: $text-muted; margin: 1 0 0 0; }
    Welcome .presets { margin: 1 0 0 0; }
    """

    class Picked(Message):
        """An example prompt was clicked."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, info: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.info = info or {}
        self.model = Static(model_line(self.info), classes="model")

    def compose(self) -> ComposeResult:
        yield self.model
        yield Static("Try one: type its number and press Enter, or click it.", classes="hint")
        for number, text in enumerate(EXAMPLES, start=1):
            yield Example(number, text)
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold", no_wrap=True)
        keys.add_column()  # wraps under itself on a narrow screen, not under the keys
        for key, what in KEYS:
            keys.add_row(key, what)
        yield Static(keys, classes="keys")
        presets = self.app.settings_file.presets if self.app.settings_file is not None else {}
        if presets:
            yield Static(presets_line(list(presets)), classes="presets")

    def on_mount(self) -> None:
        self.border_title = "Welcome to glasschat"

    def set_model(self, info: dict) -> None:
        self.info = info
        self.model.update(model_line(info))


def presets_line(names: list[str]) -> Text:
    """The presets in the settings file, and how to pick one."""
    line = Text.assemble(("Presets: ", "bold"))
    for n, name in enumerate(names):
        line.append(("  ·  " if n else ""), "dim")
        line.append(name, "bold")
    line.append("   (Ctrl+P, then “Preset: …”: a new conversation with one)", "dim")
    return line


def example_for(text: str) -> str | None:
    """The example a message picks ("2" picks the second), or None for a real message."""
    choice = text.strip()
    if choice.isdigit() and 1 <= int(choice) <= len(EXAMPLES):
        return EXAMPLES[int(choice) - 1]
    return None
