"""Textual messages that carry engine events to the UI thread."""

from textual.message import Message


class EngineEventsWaiting(Message):
    """Engine events wait in the app's inbox (chat/event_inbox.py): the app takes them all, in order."""


class NeedsChanged(Message):
    """A view now needs something else from the engine at each step (another layer, say)."""


class PromptSubmitted(Message):
    """The user pressed Enter in the prompt box."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class BranchPicked(Message):
    """←/→ (or a click on the arrows) on a message with siblings: show the sibling `delta` away."""

    def __init__(self, turn_id: int, delta: int) -> None:
        super().__init__()
        self.turn_id, self.delta = turn_id, delta


class ForkPicked(Message):
    """Enter (or a click) on a top-k candidate in confidence colouring: fork the reply there."""

    def __init__(self, turn_id: int, at: int, token: int) -> None:
        super().__init__()
        self.turn_id, self.at, self.token = turn_id, at, token


class EditPicked(Message):
    """`e` on a user message: put its text in the prompt box, to send as a new branch."""

    def __init__(self, message) -> None:
        super().__init__()
        self.message = message  # the UserMessage widget
