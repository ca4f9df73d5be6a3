"""A request to the app's server (`glasschat --serve`) taken on the UI thread: a conversation of its own, then its turn.

The server's worker (chat/api/app_backend.py) queues a `ServedTurn` where typed messages
wait; once the engine is free it starts here: a new conversation on the request's system
prompt, its history put on the tree (each reply as the ids it was sampled as, when this
app sampled it) and saved, then the last message planned as a typed one is and drawn with
the history above it. The turn goes to the engine with the request's own decode settings;
from there the app's handlers and views take its events as any turn's, and the worker
reads the same events for the client. The engine keeps the longest prefix the new
conversation shares with its cache, so a client extending its last request prefills only
what is new, in the app as in `glasschat serve`.
"""

from dataclasses import replace

from model.errors import ModelError
from model.runtime.branches import ROOT, Turn

from .api.app_backend import ServedTurn
from .api.served_store import TITLE_CHARS
from .widgets.transcript import Notice
from .widgets.user_message import UserMessage


def history_turns(served: ServedTurn, tokenizer, first_id: int) -> list[Turn]:
    """The request's earlier exchanges as turns of a new tree, numbered from `first_id`."""
    turns, parent = [], ROOT
    for i, (user, reply, ids) in enumerate(served.history):
        reply_ids = ids if ids is not None else tuple(tokenizer.encode_text(reply))
        turns.append(Turn(turn_id=first_id + i, parent=parent, user=user, reply_ids=reply_ids, reply_text=reply))
        parent = first_id + i
    return turns


def title(served: ServedTurn) -> str:
    """As `glasschat serve` titles what it saves (chat/api/served_store.py)."""
    first = " ".join((served.history[0][0] if served.history else served.user).split())
    return (
        f"served{f' to {served.client}' if served.client else ''}: "
        + first[:TITLE_CHARS]
        + ("…" if len(first) > TITLE_CHARS else "")
    )


def notice(served: ServedTurn) -> str:
    who = f" from {served.client}" if served.client else ""
    earlier = f", after {len(served.history)} earlier exchange(s)" if served.history else ""
    return f"API request{who}{earlier}: a conversation of its own."


async def start(control, served: ServedTurn) -> None:
    """Plan, draw and send the request's turn; the engine is free (the control checked)."""
    if served.withdrawn:
        return  # its client left while it waited
    app, conversation = control.app, control.conversation
    text = app.engine.text()
    try:
        conversation.reset(served.system)  # saved as a new conversation
        turns = history_turns(served, text.tokenizer, conversation.turn_count + 1)
        current = turns[-1].turn_id if turns else ROOT
        conversation.restore(served.system, turns, current)  # the tree only: the turn below moves the cache
        if app.recorder is not None:
            app.recorder.served(title(served), served.client, turns)
        turn = conversation.follow(served.user)
    except ModelError as exc:
        served.refuse(str(exc))
        return
    if not served.send(turn.turn_id):
        conversation.failed(turn.turn_id)
        return
    control.screen.stop_editing()
    control.scored = set()
    control.state.reply()
    control._changed()
    transcript = control.transcript
    await transcript.show_path(turn.parent, forget=True)  # the history, in place of what was shown
    await transcript.mount(Notice(notice(served)), before=0)
    bubble = UserMessage(turn.user)
    await transcript.add(bubble)
    await transcript.begin(turn, bubble)
    app.engine.generate(replace(conversation.request(turn), decode=served.decode))
