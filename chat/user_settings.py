"""Settings that stay between runs: a small TOML file in the user's config directory.

It holds what a user sets in the app: sampling, reply length, cache size and
sink, KV bits, prompt lookup, thinking, the system prompt, the open panels and views, and the
theme; the models opened before, for the Models screen; and presets (`chat/presets.py`).
Only what was set is written, so a default that changes in a later version
still reaches everyone who never touched it.

The app reads the file at start; a command-line flag beats it for that run and
is not written back. The headless commands (`run`, `replay`) ignore it, so a
script prints the same on every machine. A setting that is broken or unknown
gets one line and its default; a file that is not TOML gets one line, every
default, and is left as it is (nothing is written over it in that run).
"""

import math
import os
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Optional

import tomli_w

from . import presets as preset_table
from .presets import Preset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10 only
    import tomli as tomllib

FILE_NAME = "settings.toml"
HEADER = "# glasschat settings, written when you change one in the app; edit freely (README: Settings).\n"


def config_dir() -> Path:
    """Where the file lives. XDG_CONFIG_HOME wins where it is set, on every platform."""
    if os.environ.get("XDG_CONFIG_HOME"):
        return Path(os.environ["XDG_CONFIG_HOME"]) / "glasschat"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "glasschat"
    return Path.home() / ".config" / "glasschat"


def settings_path() -> Path:
    return config_dir() / FILE_NAME


def _number(low: float, high: float, integer: bool = False) -> tuple[Callable[[object], bool], str]:
    def check(value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if integer and not isinstance(value, int):
            return False
        return math.isfinite(value) and low <= value <= high

    kind = "a whole number" if integer else "a number"
    return check, f"{kind} from {low:g} to {high:g}"


def _one_of(*choices) -> tuple[Callable[[object], bool], str]:
    return (lambda value: value in choices and not isinstance(value, bool)), "one of " + ", ".join(map(str, choices))


_TEXT = (lambda value: isinstance(value, str)), "text"
_NAMES = (lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value)), "a list of names"


def _setting(section: str, flag: Optional[str], rule: tuple) -> dict:
    """A field's place in the file, the command-line option it gives a default for, and its check."""
    check, wants = rule
    return field(default=None, metadata={"section": section, "flag": flag, "check": check, "wants": wants})


@dataclass(frozen=True)
class UserSettings:
    """What the file says; None is "not set" (the command line's default applies)."""

    # The bounds are those of the palette's forms and of the engine (the sink is checked
    # against the cache size when a conversation starts).
    temp: Optional[float] = _setting("sampling", "temp", _number(0, 5))
    top_k: Optional[int] = _setting("sampling", "top_k", _number(0, 100000, integer=True))
    top_p: Optional[float] = _setting("sampling", "top_p", _number(0, 1))
    min_p: Optional[float] = _setting("sampling", "min_p", _number(0, 1))
    repetition_penalty: Optional[float] = _setting("sampling", "repetition_penalty", _number(0.1, 10))
    max_tokens: Optional[int] = _setting("sampling", "max_tokens", _number(1, 1 << 20, integer=True))
    max_kv_size: Optional[int] = _setting("cache", "max_kv_size", _number(64, 1 << 20, integer=True))
    keep: Optional[int] = _setting("cache", "keep", _number(0, 1 << 19, integer=True))
    kv_bits: Optional[int] = _setting("cache", "kv_bits", _one_of(4, 8))
    prompt_lookup: Optional[str] = _setting("decode", "prompt_lookup", _one_of("auto", "on", "off"))
    thinking: Optional[str] = _setting("chat", "thinking", _one_of("auto", "on", "off"))
    system: Optional[str] = _setting("chat", "system", _TEXT)
    theme: Optional[str] = _setting("app", "theme", _TEXT)  # a Textual theme, as the palette's picker names it
    views: Optional[tuple[str, ...]] = _setting("app", "views", _NAMES)  # the panels and views open
    recent: Optional[tuple[str, ...]] = _setting("models", None, _NAMES)  # models opened, newest first (paths, Hub ids)

    def flag_defaults(self) -> dict:
        """The command-line defaults this file sets, by argparse dest."""
        return {f.metadata["flag"]: getattr(self, f.name) for f in _flagged() if getattr(self, f.name) is not None}

    def changed(self, **values) -> "UserSettings":
        return replace(self, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _flagged():
    return [f for f in fields(UserSettings) if f.metadata["flag"]]


@dataclass
class SettingsFile:
    """The file, its settings, and what was wrong with it (one line each)."""

    path: Path
    settings: UserSettings = field(default_factory=UserSettings)
    problems: list[str] = field(default_factory=list)
    writable: bool = True  # False when the file could not be read: it is not overwritten
    presets: dict[str, Preset] = field(default_factory=dict)  # [presets.NAME], in the file's order
    unread_presets: dict[str, object] = field(default_factory=dict)  # [presets] entries that are not tables

    def save(self, settings: UserSettings) -> Optional[str]:
        """Write the settings (and the presets); returns one line if it could not be written."""
        self.settings = settings
        if not self.writable:
            return f"Settings not saved: fix or remove {self.path} first."
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tables = to_toml(settings)
            presets = preset_table.to_toml(self.presets, self.unread_presets)
            if presets:
                tables["presets"] = presets
            tmp.write_text(HEADER + tomli_w.dumps(tables), encoding="utf-8")
            tmp.replace(self.path)  # whole or not at all: a crash never leaves half a file
        except OSError as exc:
            return f"Settings not saved to {self.path}: {exc.strerror or exc}."
        return None


def to_toml(settings: UserSettings) -> dict:
    tables: dict = {}
    for f in fields(UserSettings):
        value = getattr(settings, f.name)
        if value is not None:  # TOML has no null: an unset setting is left out
            tables.setdefault(f.metadata["section"], {})[f.name] = list(value) if isinstance(value, tuple) else value
    return tables


def load(path: Optional[Path] = None, views: Collection[str] = (), themes: Collection[str] = ()) -> SettingsFile:
    """Read the file; a missing one is every default, and nothing in it stops the app starting."""
    path = path or settings_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SettingsFile(path)
    except (OSError, UnicodeDecodeError) as exc:
        return SettingsFile(
            path, problems=[f"{path} can't be read ({exc}); using the default settings."], writable=False
        )
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:  # also: nested too deep, a number too long
        reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
        return SettingsFile(
            path, problems=[f"{path} is not valid TOML ({reason}); using the default settings."], writable=False
        )
    presets, unread, preset_problems = preset_table.from_toml(data.pop("presets", {}), preset_rules())
    values, problems = from_toml(data, views, themes)
    lines = [f"{path}: {p}" for p in problems + preset_problems]
    return SettingsFile(path, UserSettings(**values), lines, presets=presets, unread_presets=unread)


def preset_rules() -> dict:
    """A preset's settings are checked as the same settings are outside one."""
    by_name = {f.name: f for f in fields(UserSettings)}
    return {key: (by_name[key].metadata["check"], by_name[key].metadata["wants"]) for key in preset_table.KEYS}


def _short(text: str) -> str:
    """A name or value from the file, kept to one short line (a key may be a megabyte long)."""
    text = text.replace("\n", "\\n")
    return text if len(text) <= 60 else text[:59] + "…"


def from_toml(data: dict, views: Collection[str] = (), themes: Collection[str] = ()) -> tuple[dict, list[str]]:
    """The known settings in a parsed file, and one line per one that is unknown or broken.

    `views` and `themes` are the names the app knows (empty: not checked).
    """
    by_place = {(f.metadata["section"], f.name): f for f in fields(UserSettings)}
    values, problems = {}, []
    for section, table in data.items():
        if not isinstance(table, dict):
            problems.append(f"unknown setting '{_short(section)}' ignored.")
            continue
        for key, value in table.items():
            f = by_place.get((section, key))
            if f is None:
                problems.append(f"unknown setting '{_short(section)}.{_short(key)}' ignored.")
            elif not f.metadata["check"](value):
                problems.append(
                    f"{section}.{key} = {_short(repr(value))} must be {f.metadata['wants']}; using the default."
                )
            elif key == "views" and views and set(value) - set(views):
                unknown = _short(", ".join(sorted(set(value) - set(views))))
                problems.append(f"app.views: no view called {unknown}; using the default views.")
            elif key == "theme" and themes and value not in themes:
                problems.append(f"app.theme: no theme called {_short(repr(value))}; using the default theme.")
            else:
                values[key] = tuple(value) if isinstance(value, list) else value
    return values, problems
