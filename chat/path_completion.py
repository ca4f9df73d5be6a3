"""Tab completion of a file path, as a shell does it: the one match, or as far as every match agrees."""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Completion:
    text: str  # the path, completed as far as it can be
    matches: list[str]  # the names that fit what was typed (several: Tab alone cannot choose)


def complete_path(typed: str) -> Completion:
    """`typed` completed: a folder gets its `/`; `~` is kept as typed (and expanded to look)."""
    folder, start = os.path.split(typed)
    look_in = os.path.expanduser(folder) if folder else "."
    try:
        names = sorted(n for n in os.listdir(look_in) if n.startswith(start) and (start or not n.startswith(".")))
    except OSError:
        return Completion(typed, [])
    if not names:
        return Completion(typed, [])
    common = os.path.commonprefix(names)
    completed = os.path.join(folder, common) if folder else common
    if len(names) == 1 and os.path.isdir(os.path.join(look_in, common)):
        completed += os.sep
    return Completion(completed, names)
