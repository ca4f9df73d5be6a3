"""A saved conversation opened at a message found by search: the path through it shown, scrolled to, highlighted.

A message may be on a branch the conversation does not show: the store then
shows the newest path through it (as ←/→ would). The message is found in the
transcript by its place on that path (which turn, whose side) once the path is
drawn: when the conversation is reopened, at once or once a reply under way has
stopped (ChatControl.open_saved).
"""

from dataclasses import dataclass
from typing import Optional

from textual.widget import Widget

from .store import Store, StoreError
from .widgets.reply_message import AssistantMessage
from .widgets.user_message import UserMessage


@dataclass(frozen=True)
class FoundMessage:
    turn: int  # the turn along the path shown, from 0
    role: str  # "user": the turn's message; "assistant": its reply


def show_path_through(store: Store, conversation_id: int, message_id: int) -> FoundMessage:
    """Make the store show a path through the message; where it sits on that path."""
    leaf = store.path_through(conversation_id, message_id)
    if leaf != store.current_message(conversation_id):
        store.show(conversation_id, leaf)
    turn = -1
    for message in store.path_to(conversation_id, leaf):
        turn += message.role == "user"
        if message.id == message_id:
            return FoundMessage(max(turn, 0), message.role)
    raise StoreError(f"Message {message_id} is not in conversation {conversation_id} any more.")


def highlight(transcript: Widget, found: FoundMessage) -> Optional[Widget]:
    """Mark the found message (the `found` class) and scroll the transcript to it; None if it is not drawn."""
    kind = UserMessage if found.role == "user" else AssistantMessage
    drawn = list(transcript.query(kind))
    if found.turn >= len(drawn):
        return None
    for widget in transcript.query(".found"):
        widget.remove_class("found")
    target = drawn[found.turn]
    target.add_class("found")
    transcript.call_after_refresh(_scroll_to, transcript, target)
    return target


def _scroll_to(transcript: Widget, target: Widget) -> None:
    if transcript.max_scroll_y <= 0:
        return  # it all fits (scrolling a short transcript's top to a message would push the rest out of view)
    transcript.release_anchor()  # the transcript follows the newest message; here the user asked for this one
    transcript.scroll_to_widget(target, top=True, animate=False)


async def open_found(screen, conversation_id: int, message_id: int) -> None:
    """The chat screen opens a search hit: its conversation on the path through it, the message highlighted
    once the path is drawn (ChatControl.open_saved)."""
    try:
        found = show_path_through(screen.app.recorder.store, conversation_id, message_id)
    except StoreError as exc:
        screen.notify(str(exc), severity="error")
        return
    await screen.control.open_saved(conversation_id, found)
