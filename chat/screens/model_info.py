"""Model facts (architecture, shape, parameters, weights, backend) and this run's settings, with where they come from."""

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from ..formatting import human_bytes

ROWS = [
    ("source", "model"),
    ("architecture", "architecture"),
    ("layers", "layers"),
    ("heads", "query heads"),
    ("kv_heads", "key/value heads"),
    ("hidden_size", "width"),
    ("context_length", "trained context"),
    ("vocab_size", "vocabulary"),
    ("parameters", "parameters"),
    ("weight_dtype", "weight dtype"),
    ("weight_layout", "weight layout"),
    ("file_types", "file tensors"),
    ("weight_bytes", "weight memory"),
    ("matvec", "decode matvec"),
    ("backend", "backend"),
    ("compute_path", "code path"),
    ("mlx_active_bytes", "MLX memory"),
    ("wired_limit", "wired limit"),
    ("memory_note", "memory note"),
    ("blas", "BLAS"),
    ("blas_note", "BLAS note"),
]
# Shown only when there is something to say.
OPTIONAL = {"blas_note", "file_types", "mlx_active_bytes", "wired_limit", "memory_note"}  # the last three: GPU


def info_table(info: dict) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(style="bold")
    for key, label in ROWS:
        if key in OPTIONAL and not info.get(key):
            continue
        value = info.get(key, "–")
        if key == "weight_bytes":
            value = human_bytes(value)
        elif key == "mlx_active_bytes":  # MLX's allocator when the model had loaded (the gpu path)
            value = f"{human_bytes(value)} at load, {human_bytes(info.get('mlx_peak_bytes', 0))} peak"
        elif key == "compute_path" and value != info.get("backend", value):
            value = f"{value} (the {value.upper()}'s operations, run on the {info['backend'].upper()}: GLASSCHAT_PATH)"
        elif key == "parameters":
            value = f"{value / 1e6:.1f} M"
        table.add_row(label, str(value))
    return table


def settings_table(options, settings_file) -> Table:
    """This run's settings, and the file that keeps them (a flag on the command line beats it)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(overflow="fold")  # a long path is folded, never cut: the user needs all of it
    cache = options.cache
    table.add_row("sampling", options.sampling.distribution_label())
    table.add_row("longest reply", f"{options.max_tokens} tokens")
    table.add_row(
        "KV cache",
        f"{cache.max_kv_size} tokens, sink {'the system prompt' if cache.keep is None else cache.keep}, "
        + (f"{cache.kv_bits}-bit" if cache.kv_bits else "the model's dtype"),
    )
    table.add_row("prompt lookup", {None: "auto", True: "on", False: "off"}[options.lookup.enabled])
    table.add_row("system prompt", options.system or "the model's default")
    if settings_file is None:
        table.add_row("settings file", "none (nothing is remembered in this run)")
    else:
        table.add_row("settings file", f"{settings_file.path}\nchanges are kept there; a flag beats it for one run")
    return table


class ModelInfoScreen(ModalScreen):
    DEFAULT_CSS = """
    ModelInfoScreen { align: center middle; }
    ModelInfoScreen > Vertical { width: 76; max-width: 95%; height: auto; border: round $accent; background: $surface; padding: 1 2; }
    """
    BINDINGS = [Binding("escape,q,enter", "dismiss", "Close")]

    def __init__(self, info: dict, settings: Table | None = None):
        super().__init__()
        self.info = info
        self.settings = settings

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("[b]Model[/b]")
            yield Static(info_table(self.info))
            if self.settings is not None:
                yield Static("\n[b]This run[/b]")
                yield Static(self.settings)
