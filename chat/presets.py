"""Presets: a named system prompt and sampling settings, kept in the settings file as `[presets.NAME]`.

    [presets.translator]
    system = "Translate what I write into French."
    temp = 0.3
    top_p = 0.9

A preset sets only what it names; the rest stays as it was (the settings file's,
or the command line's default). Its keys are the settings file's own, with the
same checks: a broken one gets one line and is left out of the preset, so the
default applies; it stays in the file as written when the app writes the file
again (a typo is fixed by hand, not lost). Picked with `--preset NAME` (app, `run`, `replay`) or from the
palette ("Preset: NAME"), which starts a new conversation with it.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# The settings a preset may hold: the system prompt and what shapes each reply.
KEYS = ("system", "temp", "top_k", "top_p", "min_p", "repetition_penalty", "max_tokens")
MAX_NAME = 40

Rule = tuple[Callable[[object], bool], str]  # a value's check, and what it must be (one line)


@dataclass(frozen=True)
class Preset:
    name: str
    values: Mapping[str, object] = field(default_factory=dict)  # by KEYS name; only what the preset sets
    # The file's entries that failed their check or are unknown: written back as they were, never used.
    left_out: Mapping[str, object] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        """One line: what picking it changes."""
        parts = [f"{key.replace('_', ' ')} {value}" for key, value in self.values.items() if key != "system"]
        system = self.values.get("system")
        if system:
            short = " ".join(str(system).split())
            parts.insert(0, f"system prompt “{short[:40]}{'…' if len(short) > 40 else ''}”")
        return ", ".join(parts) or "no settings"


def name_problem(name: str) -> str | None:
    """Why a name typed for a new preset cannot be used, or None."""
    if not name.strip():
        return "Give the preset a name."
    if len(name) > MAX_NAME:
        return f"A preset's name has at most {MAX_NAME} characters."
    if any(ord(ch) < 32 for ch in name):
        return "A preset's name is one line of text."
    return None


def from_toml(table: object, rules: Mapping[str, Rule]) -> tuple[dict[str, Preset], dict[str, object], list[str]]:
    """The `[presets]` table: each preset with the settings that pass `rules`, the entries that are not tables
    (kept to be written back as they were), and one line per problem."""
    if not isinstance(table, dict):
        return {}, {}, ["presets must be tables, [presets.NAME]; ignored."]
    presets, unread, problems = {}, {}, []
    for name, entry in table.items():
        if not isinstance(entry, dict):
            problems.append(f"presets.{name} must be a table of settings ([presets.{name}]); ignored.")
            unread[name] = entry
            continue
        values, left_out = {}, {}
        for key, value in entry.items():
            if key not in KEYS:
                problems.append(f"unknown setting 'presets.{name}.{key}' ignored (a preset holds {', '.join(KEYS)}).")
                left_out[key] = value
                continue
            check, wants = rules[key]
            if check(value):
                values[key] = value
            else:
                problems.append(f"presets.{name}.{key} = {value!r} must be {wants}; preset {name} uses the default.")
                left_out[key] = value
        presets[name] = Preset(name, values, left_out)
    return presets, unread, problems


def to_toml(presets: Mapping[str, Preset], unread: Mapping[str, object]) -> dict:
    """The `[presets]` table to write: each preset with the entries it left out, and the entries that were not
    presets, as they were read (a preset saved under such a name replaces it)."""
    table = dict(unread)
    for name, preset in presets.items():
        table[name] = {**preset.left_out, **preset.values}
    return table


def unknown(name: str, presets: Mapping[str, Preset], where: object) -> str:
    """The line for a preset asked for that the file does not have."""
    known = ", ".join(sorted(presets)) if presets else "none yet"
    return (
        f"No preset called {name!r} in {where} (presets there: {known}); add [presets.{name}] or save one from Ctrl+P."
    )
