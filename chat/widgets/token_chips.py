"""A message as its tokens: coloured chips with their ids underneath, shown under it with `t`."""

from typing import Optional

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from ..formatting import visible_token

PALETTE = ["#2d4f7c", "#5b3a70", "#2f6b4f", "#7a4a2a", "#2b5e6b", "#6b2f3f"]


def chip_lines(ids: list[int], pieces: list[str], width: int) -> list[Text]:
    """Rows of chips (token text) with an id row under each, wrapped at `width`."""
    rows, top, bottom, used = [], Text(), Text(), 0
    for n, (tid, piece) in enumerate(zip(ids, pieces)):
        label = visible_token(piece)
        cell = max(len(label), len(str(tid))) + 1
        if used and used + cell > width:
            rows += [top, bottom]
            top, bottom, used = Text(), Text(), 0
        top.append(label.ljust(cell - 1), style=f"on {PALETTE[n % len(PALETTE)]}")
        top.append(" ")
        bottom.append(str(tid).ljust(cell), style="dim")
        used += cell
    return rows + [top, bottom] if used else rows


class TokenChips(Static):
    DEFAULT_CSS = """
    TokenChips { padding: 0 1; margin: 0 0 0 2; height: auto; }
    """

    def __init__(self, ids: list[int], pieces: list[str]):
        super().__init__()
        self.ids, self.pieces = ids, pieces

    def on_resize(self) -> None:
        self.refresh_chips()

    def on_mount(self) -> None:
        self.refresh_chips()

    def refresh_chips(self) -> None:
        width = max(self.size.width - 2, 20)
        caption = Text(f"{len(self.ids)} tokens: what the model reads, not the letters", style="italic dim")
        self.update(Text("\n").join(chip_lines(self.ids, self.pieces, width) + [caption]))


async def toggle_chips(message: Widget, tokens: Optional[tuple[list[int], list[str]]]) -> None:
    """Show the message's tokens under it, or hide them again."""
    siblings = list(message.parent.children)
    index = siblings.index(message)
    following = siblings[index + 1] if index + 1 < len(siblings) else None
    if isinstance(following, TokenChips):
        await following.remove()
        return
    if tokens is None:
        message.notify("Tokens can be shown once the model has loaded.")
        return
    await message.parent.mount(TokenChips(*tokens), after=message)
