"""Textual messages that carry engine events to the UI thread."""

from textual.message import Message

from model.runtime.events import Event, TokenGenerated


class EngineEvent(Message):
    """An engine event, delivered in order; never dropped."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class StepStats(Message):
    """A decode step's numbers for the panels; a newer one replaces an unshown older one."""

    def __init__(self, event: TokenGenerated) -> None:
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StepStats)


class PromptSubmitted(Message):
    """The user pressed Enter in the prompt box."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
