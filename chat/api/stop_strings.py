"""`stop` strings: the reply ends before the first one, which is never sent, even split over tokens.

A token's text is held back while the text so far ends with the start of a stop
string (" Par" while waiting to see whether "Paris" follows), and released once it
cannot be one. Held steps go out whole, with their logprobs, so a streamed reply and
a non-streamed one always agree.
"""

from dataclasses import replace

from .backend import ReplyStep


class StopFilter:
    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.held: list[ReplyStep] = []
        self.stopped = False  # a stop string was found: the reply ends here

    def feed(self, step: ReplyStep) -> list[ReplyStep]:
        """The steps that may be sent now (none once stopped)."""
        if self.stopped:
            return []
        if not self.stops:
            return [step]
        self.held.append(step)
        text = "".join(s.text for s in self.held)
        found = [text.find(stop) for stop in self.stops if stop in text]
        if found:
            self.stopped = True
            return self._release(min(found), cut=True)
        return self._release(len(text) - self._open_prefix(text), cut=False)

    def finish(self) -> list[ReplyStep]:
        """The reply ended without a stop string: whatever was held goes out."""
        out, self.held = ([] if self.stopped else self.held), []
        return out

    def _open_prefix(self, text: str) -> int:
        """The length of the longest end of `text` that some stop string starts with."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest

    def _release(self, upto: int, cut: bool) -> list[ReplyStep]:
        """Steps whose text ends by `upto`; with `cut`, the step across it too, its text cut there, and the rest dropped."""
        out, start = [], 0
        for i, step in enumerate(self.held):
            end = start + len(step.text)
            if end <= upto:
                out.append(step)
            elif cut:
                if upto > start:
                    out.append(replace(step, text=step.text[: upto - start]))
                self.held = []
                return out
            else:
                self.held = self.held[i:]
                return out
            start = end
        self.held = []
        return out
