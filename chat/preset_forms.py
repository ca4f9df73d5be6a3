"""The palette's presets: "Preset: NAME" starts a new conversation with it; "Save settings as a preset" asks a name."""

from collections.abc import Iterable
from dataclasses import replace
from typing import Optional

from textual.app import App, SystemCommand

from .presets import Preset, name_problem
from .screens.form import FormScreen

SAMPLING = {  # a preset's key -> SamplingSettings' field
    "temp": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
}


def commands(app: App) -> Iterable[SystemCommand]:
    presets = app.settings_file.presets if app.settings_file is not None else {}
    for name, preset in presets.items():
        yield SystemCommand(
            f"Preset: {name}",
            f"A new conversation with {preset.describe()}",
            lambda preset=preset: app.call_later(pick, app, preset),
        )
    yield SystemCommand(
        "Save settings as a preset",
        "The system prompt and sampling settings now in use, under a name, for Ctrl+P and --preset",
        lambda: save_as_preset(app),
    )


async def pick(app: App, preset: Preset) -> None:
    """The preset's settings over the current ones, asked of the engine; the app takes them from its report
    (OptionsAdopted), which remembers them for the next run as any palette change, and starts a new conversation
    when the system prompt changes (it is pinned at the start of the cache). Else a new conversation starts here."""
    values = preset.values
    sampling = replace(app.options.sampling, **{SAMPLING[k]: v for k, v in values.items() if k in SAMPLING})
    system = values.get("system", app.options.system) or None
    max_tokens = values.get("max_tokens", app.options.max_tokens)
    same_system = system == app.options.system
    app.ask_options(system=system, sampling=sampling, max_tokens=max_tokens)
    if same_system:
        await app.chat.control.new_conversation()
    app.notify(f"Preset {preset.name}: {preset.describe()}.")


def current_as_preset(app: App, name: str) -> Preset:
    """Everything a preset holds, as the app now has it."""
    s = app.options.sampling
    values = {key: getattr(s, field) for key, field in SAMPLING.items()}
    values["max_tokens"] = app.options.max_tokens
    if app.options.system:
        values = {"system": app.options.system, **values}
    return Preset(name, values)


def save_as_preset(app: App) -> None:
    kept = app.settings_file
    if kept is None:
        app.notify("Presets live in the settings file, and this run has none.", severity="warning")
        return

    def done(values: Optional[dict]) -> None:
        if values is None:
            return
        name = values["name"].strip()
        replaced = name in kept.presets
        kept.presets[name] = current_as_preset(app, name)
        problem = kept.save(kept.settings)
        if problem:
            app.notify(problem, severity="warning")
        else:
            app.notify(f"{'Replaced' if replaced else 'Saved'} preset {name}: Ctrl+P, “Preset: {name}”, or --preset.")

    names = ", ".join(kept.presets) or "none yet"
    app.push_screen(
        FormScreen(
            "Save settings as a preset",
            [("name", "name", "")],
            hint=f"The system prompt and sampling in use. Presets now: {names}.",
            validate=lambda v: name_problem(v["name"].strip()),
        ),
        done,
    )
