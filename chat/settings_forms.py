"""The command palette's settings forms, and how their answers reach the engine and come back.

A form's answer is asked of the engine (`app.ask_options`); the app takes it, remembers it
in the settings file and says so only once the engine reports it in force (OptionsAdopted):
see `changes_to_remember` and `notices_for`, and chat/model_control.py.
"""

from dataclasses import replace
from typing import Optional

from textual.app import App

from model.cache.settings import MIN_CAPACITY, CacheSettings, keep_problem
from model.runtime.settings import EngineOptions, SamplingSettings

from .screens.form import FormScreen

CHOICE = {None: "auto", True: "on", False: "off"}  # how the settings file writes a tri-state option


def _remembered(options: EngineOptions) -> dict[str, dict]:
    """The options a user sets in the app, by the option each form sets, as the settings file names them."""
    s, c = options.sampling, options.cache
    return {
        "sampling": {"temp": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p},
        "cache": {"max_kv_size": c.max_kv_size, "keep": c.keep},
        "lookup": {"prompt_lookup": CHOICE[options.lookup.enabled]},
        "thinking": {"thinking": CHOICE[options.thinking]},
        "system": {"system": options.system},
        # Set only by a preset (chat/preset_forms.py): each on its own, so a form never writes them.
        "repetition_penalty": {"repetition_penalty": s.repetition_penalty},
        "max_tokens": {"max_tokens": options.max_tokens},
    }


def changes_to_remember(old: EngineOptions, new: EngineOptions) -> dict:
    """What the settings file should remember of a change the engine adopted: every field of a form that changed
    (the form set them all)."""
    values, before = {}, _remembered(old)
    for group, fields in _remembered(new).items():
        if fields != before[group]:
            values.update(fields)
    return values


def notices_for(old: EngineOptions, new: EngineOptions) -> list[str]:
    """One line per change the user made that applies from the next reply."""
    lines = []
    if new.sampling != old.sampling:
        lines.append(f"Sampling: {new.sampling.distribution_label()} (from the next reply)")
    if new.lookup.enabled != old.lookup.enabled:
        lines.append(f"Prompt lookup: {LOOKUP_SAYS[new.lookup.enabled]} (from the next reply)")
    if new.thinking != old.thinking:
        lines.append(f"Thinking {'off' if new.thinking is False else 'on'} from the next message.")
    return lines


def _number(value: str, kind: type, low: float, high: float, name: str) -> tuple[Optional[float], Optional[str]]:
    try:
        number = kind(value)
    except ValueError:
        return None, f"{name} must be a number."
    if not low <= number <= high:
        return None, f"{name} must be between {low} and {high}."
    return number, None


SAMPLING_FIELDS = [
    ("temperature (0 = greedy)", "temp", float, 0.0, 5.0),
    ("top-k (0 = all)", "top_k", int, 0, 100000),
    ("top-p", "top_p", float, 0.0, 1.0),
    ("min-p", "min_p", float, 0.0, 1.0),
]


def parse_sampling(values: dict, current: SamplingSettings) -> tuple[Optional[SamplingSettings], Optional[str]]:
    """The form's sampling settings, or None and the one-line reason they are refused."""
    parsed = {}
    for label, key, kind, low, high in SAMPLING_FIELDS:
        parsed[key], error = _number(values[key], kind, low, high, label.split(" (")[0])
        if error:
            return None, error
    return replace(
        current, temperature=parsed["temp"], top_k=parsed["top_k"], top_p=parsed["top_p"], min_p=parsed["min_p"]
    ), None


def edit_sampling(app: App) -> None:
    s = app.options.sampling
    current = {"temp": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p}

    def done(values: Optional[dict]) -> None:
        if values is not None:
            app.ask_options(sampling=parse_sampling(values, app.options.sampling)[0])

    app.push_screen(
        FormScreen(
            "Sampling settings",
            [(label, key, str(current[key])) for label, key, *_ in SAMPLING_FIELDS],
            hint="Applies from the next reply.",
            validate=lambda v: parse_sampling(v, app.options.sampling)[1],
        ),
        done,
    )


def edit_system_prompt(app: App) -> None:
    def done(values: Optional[dict]) -> None:
        if values is not None:  # a new system prompt starts a new conversation, once the engine has it
            app.ask_options(system=values["system"].strip() or None)

    app.push_screen(
        FormScreen(
            "System prompt",
            [("system prompt (empty: the model's default)", "system", app.options.system or "")],
            hint="Starts a new conversation: the system prompt is pinned at the cache start.",
        ),
        done,
    )


def parse_cache(values: dict, current: CacheSettings) -> tuple[Optional[CacheSettings], Optional[str]]:
    """The form's cache settings, or None and the one-line reason they are refused."""
    size, error = _number(values["size"], int, MIN_CAPACITY, 1 << 20, "capacity")
    if error:
        return None, error
    keep = None
    if values["keep"].strip():
        keep, error = _number(values["keep"], int, 0, size, "sink")
        error = error or keep_problem(keep, size)
        if error:
            return None, error
    return replace(current, max_kv_size=size, keep=keep), None


def edit_cache(app: App) -> None:
    c = app.options.cache

    def done(values: Optional[dict]) -> None:
        if values is not None:  # the engine may refuse it: the cache must fit the model (OptionsRefused)
            app.ask_options(cache=parse_cache(values, app.options.cache)[0])

    app.push_screen(
        FormScreen(
            "KV cache",
            [
                ("capacity in tokens", "size", str(c.max_kv_size)),
                ("sink tokens (empty: the system prompt)", "keep", "" if c.keep is None else str(c.keep)),
            ],
            hint="Starts a new conversation with an empty cache.",
            validate=lambda v: parse_cache(v, app.options.cache)[1],
        ),
        done,
    )


LOOKUP_NEXT = {None: True, True: False, False: None}  # the palette entry steps auto -> on -> off -> auto
LOOKUP_SAYS = {None: "auto (on where it measured faster: not 4-bit on one core)", True: "on", False: "off"}


def toggle_lookup(app: App) -> None:
    """Prompt lookup auto, on or off: the reply is the same either way, only its speed differs."""
    app.ask_options(lookup=replace(app.options.lookup, enabled=LOOKUP_NEXT[app.options.lookup.enabled]))
