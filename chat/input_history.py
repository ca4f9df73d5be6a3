"""Walking back through earlier messages from the prompt box, as a shell's ↑/↓ does.

The walk starts from the draft being typed, which is kept: ↓ past the newest
entry brings it back. The entries are read when a walk starts (this
conversation's messages, newest first, then older ones from the store), so a
message sent a moment ago is the first one ↑ finds.
"""

from collections.abc import Callable, Sequence


class InputHistory:
    def __init__(self, source: Callable[[], Sequence[str]] = tuple):
        self.source = source  # earlier messages, newest first
        self.entries: list[str] = []
        self.index = -1  # -1: the draft, 0: the newest entry
        self.draft = ""

    @property
    def walking(self) -> bool:
        return self.index >= 0

    def older(self, current: str) -> str | None:
        """The entry before the one shown, or None at the oldest (the text stays)."""
        if not self.walking:
            self.entries = _unique(self.source())
            self.draft = current
        if self.index + 1 >= len(self.entries):
            return None
        self.index += 1
        return self.entries[self.index]

    def newer(self) -> str | None:
        """The entry after the one shown, then the draft; None when not walking."""
        if not self.walking:
            return None
        self.index -= 1
        return self.draft if self.index < 0 else self.entries[self.index]

    def reset(self) -> None:
        """A message was sent: the next walk starts from a fresh draft."""
        self.entries, self.index, self.draft = [], -1, ""


def _unique(texts: Sequence[str]) -> list[str]:
    # A message asked three times is one step back, not three (zsh's hist_ignore_all_dups).
    seen: set[str] = set()
    out = []
    for text in texts:
        if text.strip() and text not in seen:
            seen.add(text)
            out.append(text)
    return out
