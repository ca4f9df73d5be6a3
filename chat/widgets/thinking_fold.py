"""A reply's thinking, dimmed and folded: open while the model thinks, folded once it answers.

Thinking models (Qwen3, SmolLM3) write `<think> ... </think>` before the answer. The
engine marks those tokens (see `model.runtime.thinking`); the transcript streams them
here instead of into the answer. Click the title, or focus it and press Enter, to
open a folded one again.
"""

from textual.widgets import Collapsible, Static


class ThinkingFold(Collapsible):
    DEFAULT_CSS = """
    ThinkingFold {
        border-top: none;
        border-left: thick $secondary 40%;
        padding: 0;
        margin: 1 0 0 0;
        background: transparent;
    }
    ThinkingFold > Contents { padding: 0 1; }
    ThinkingFold .thought { color: $text-muted; text-style: italic; }
    """

    def __init__(self) -> None:
        self.body = Static("", classes="thought", markup=False)
        super().__init__(self.body, title="Thinking…", collapsed=False)
        self.text = ""
        self.thinking = True  # still streaming

    def add(self, text: str) -> None:
        self.text += text
        self.body.update(self.text.strip("\n"))

    def fold(self, tokens: int) -> None:
        """The model has stopped thinking: fold it, and say how long it thought."""
        if self.thinking:
            self.thinking = False
            self.collapsed = True
        self.title = f"Thought for {tokens} tokens"
