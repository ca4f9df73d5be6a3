"""One conversation, with one owner: the UI thread, or a headless caller (a script, a test, a server).

It holds what a conversation is: the tree of turns (model.runtime.branches), the turn ids
it hands out (`turn_count`), the options in force, the rendering of a path to token ids,
and the saving. Nothing here touches MLX: it asks the engine for what the cache must do
(model.runtime.requests) and takes the engine's reports back (`ended`, `failed`, `show`).

A turn goes: plan it on the tree (`follow`, `edit`, `regenerate`, `fork`: each returns a
`TurnInProgress`, or raises ModelError with one line for the user), send
`request(turn)`, and hand the engine's TurnEnded to `ended` (or TurnFailed to `failed`).
"""

from dataclasses import dataclass, replace
from typing import Optional, Protocol

from model.errors import ModelError
from model.loading.chat_template import Message
from model.runtime import thinking
from model.runtime.branches import Turn, TurnPlan, TurnTree
from model.runtime.chat_text import ChatText
from model.runtime.events import TurnEnded
from model.runtime.requests import HoldRequest, ScoreRequest, TurnRequest
from model.runtime.settings import EngineOptions


@dataclass(frozen=True, kw_only=True)
class TurnInProgress:
    """A turn sent to the engine and not ended yet: where it goes on the tree, and the ids it was sent as."""

    turn_id: int
    parent: int  # the turn it follows (ROOT: the system prompt)
    user: str  # the message as the model reads it (with /no_think when thinking is off that way)
    ids: tuple[int, ...]  # the prompt as rendered, then `reply_prefix`
    reply_prefix: tuple[int, ...] = ()  # a fork's forced reply start: the kept tokens, then the forced one
    forked_from: Optional[int] = None  # the turn whose reply a fork cuts
    forked_at: Optional[int] = None
    token_forced: Optional[int] = None
    opens_thinking: bool = False  # the prompt ends inside a <think> block
    note: str = ""  # for the user, e.g. characters this model has no token for


class Saver(Protocol):
    """What keeps a conversation saved (chat/recorder.py writes the store); told as the conversation changes."""

    def new(self, system: Optional[str]) -> None: ...

    def turn_started(self, turn: TurnInProgress) -> None: ...

    def turn_ended(self, turn: Turn, ended: TurnEnded) -> None: ...

    def path_shown(self, turn_id: int) -> None: ...


class Conversation:
    def __init__(self, options: EngineOptions, saver: Optional[Saver] = None):
        self.options = options  # in force: taken from the engine's reports only (`adopt`)
        self.saver = saver
        self.text: Optional[ChatText] = None  # the model's, once it has loaded (`attach`)
        self.system = options.system
        self.tree = TurnTree()
        self.turn_count = 0  # turn ids handed out so far
        self.pending: Optional[TurnInProgress] = None
        self._sink: tuple = (None, None, 0)  # (text, system, its sink): rendered once per system prompt

    def attach(self, text: ChatText) -> None:
        """The loaded model's text side: turns can be rendered from now on."""
        self.text = text

    def adopt(self, options: EngineOptions) -> None:
        """Options the engine reported in force (OptionsAdopted)."""
        self.options = options

    # --- what the conversation is ------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """The path shown, as the template renders it: system prompt, then each turn's message and reply."""
        return self._preamble() + self.tree.messages()

    def _preamble(self) -> list[Message]:
        return [Message("system", self.system)] if self.system else []

    def _ready(self) -> ChatText:
        if self.text is None:
            raise ModelError("No model is loaded: load another one first.")
        return self.text

    @property
    def sink(self) -> int:
        """The system block's length in tokens: what the cache pins."""
        text = self._ready()
        if self._sink[:2] != (text, self.system):
            self._sink = (text, self.system, text.sink_length(self.system))
        return self._sink[2]

    def path_ids(self, turn_id: int) -> list[int]:
        """The path ending at `turn_id`, rendered as a finished conversation."""
        return self._ready().render(self._preamble() + self.tree.messages(turn_id), False, self.options.thinking)

    # --- the four ways a turn starts --------------------------------------------------

    def follow(self, user: str, after: Optional[int] = None) -> TurnInProgress:
        """A user message after turn `after` (the current one by default)."""
        if not user.strip():
            raise ModelError("Type a message first: empty messages are not sent.")
        readable = self._ready().readable(user)
        note = ""
        if readable != user:
            lost = readable.count(chr(0xFFFD)) - user.count(chr(0xFFFD))
            note = f"{lost} character(s) this model has no token for were replaced with \ufffd."
        parent = self.tree.current if after is None else after
        return self._begin(TurnPlan(parent=parent, user=readable), note)

    def edit(self, after: int, user: str) -> TurnInProgress:
        """A new user message branching after turn `after` (ROOT: from the system prompt)."""
        if not self.tree.knows(after):
            raise ModelError(f"There is no turn {after} to branch after.")
        return self.follow(user, after)

    def regenerate(self, turn_id: int) -> TurnInProgress:
        """A new reply to turn `turn_id`'s message, with the sampling settings now in force."""
        return self._begin(self.tree.regenerate(turn_id))

    def fork(self, turn_id: int, at: int, token: int) -> TurnInProgress:
        """Turn `turn_id`'s reply cut before its token `at`, `token` forced there, generation continuing."""
        text = self._ready()
        if not 0 <= token < text.vocab_size:
            raise ModelError(f"Token {token} is not in this model's vocabulary (0 to {text.vocab_size - 1}).")
        if token in text.stop_ids:
            raise ModelError(f"Token {token} ends the reply; fork to a token that continues it.")
        return self._begin(self.tree.fork(turn_id, at, token))

    def _begin(self, plan: TurnPlan, note: str = "") -> TurnInProgress:
        text = self._ready()
        user = plan.user
        if self.options.thinking is False and text.thinking_switch == "/no_think":
            user = user if user.endswith(thinking.SOFT_OFF) else user + thinking.SOFT_OFF
        messages = self._preamble() + self.tree.messages(plan.parent) + [Message("user", user)]
        prompt = text.render(messages, True, self.options.thinking)
        self.turn_count += 1
        turn = TurnInProgress(
            turn_id=self.turn_count,
            parent=plan.parent,
            user=user,
            ids=tuple(prompt) + plan.reply_prefix,
            reply_prefix=plan.reply_prefix,
            forked_from=plan.forked_from,
            forked_at=plan.forked_at,
            token_forced=plan.token_forced,
            # Whether the reply starts inside a <think> block is the whole prompt's to say, not the part prefilled.
            opens_thinking=text.opens_thinking(prompt),
            note=note,
        )
        self.pending = turn
        if self.saver is not None:
            self.saver.turn_started(turn)
        return turn

    def request(self, turn: TurnInProgress) -> TurnRequest:
        """What the engine is asked for this turn, under the options in force."""
        return TurnRequest(
            turn_id=turn.turn_id,
            ids=turn.ids,
            sink=self.sink,
            reply_prefix=turn.reply_prefix,
            opens_thinking=turn.opens_thinking,
            decode=self.options.decode(),
            note=turn.note,
        )

    # --- the engine's reports -------------------------------------------------------

    def ended(self, event: TurnEnded) -> Optional[Turn]:
        """The reply came (or stopped): the turn joins the tree, on the path shown, and is saved."""
        turn = self.pending
        if turn is None or turn.turn_id != event.turn_id:
            return None  # a turn of a conversation started over since
        self.pending = None
        done = Turn(
            turn_id=turn.turn_id,
            parent=turn.parent,
            user=turn.user,
            reply_ids=event.reply_ids,
            reply_text=event.text,
            forked_at=turn.forked_at,
            token_forced=turn.token_forced,
            thought=self._ready().split_reply(event.reply_ids, turn.opens_thinking),
            cancelled=event.stats.stop_reason == "cancelled",
        )
        self.tree.add(done)
        if self.saver is not None:
            self.saver.turn_ended(done, event)
        return done

    def failed(self, turn_id: int) -> None:
        """The engine could not answer: the turn never joins the tree."""
        if self.pending is not None and self.pending.turn_id == turn_id:
            self.pending = None

    def hold_request(self, turn_id: int) -> HoldRequest:
        """Ask the cache to hold the path ending at `turn_id` (raises ModelError for a turn there is not)."""
        self.tree.path(turn_id)
        return HoldRequest(ids=tuple(self.path_ids(turn_id)), sink=self.sink)

    def show(self, turn_id: int) -> None:
        """The path ending at `turn_id` is the one shown (the cache holds it: CacheHeld)."""
        self.tree.current = turn_id
        if self.saver is not None:
            self.saver.path_shown(turn_id)

    def score_request(self, turn_id: int) -> ScoreRequest:
        """Read turn `turn_id`'s reply again (a saved one, which came without its steps)."""
        turn = self.tree.get(turn_id)
        messages = self._preamble() + self.tree.messages(turn.parent) + [Message("user", turn.user)]
        prompt = self._ready().render(messages, True, self.options.thinking)
        top_k = self.options.top_k_shown
        return ScoreRequest(turn_id=turn_id, prompt=tuple(prompt), reply=turn.reply_ids, top_k=top_k)

    # --- starting over ----------------------------------------------------------------

    def reset(self, system: Optional[str] = None) -> None:
        """A new conversation (on the options' system prompt unless another is given), saved as a new one."""
        self.system = system if system is not None else self.options.system
        self.tree, self.pending = TurnTree(), None
        if self.saver is not None:
            self.saver.new(self.system)

    def restore(self, system: Optional[str], turns: list[Turn], current: int) -> HoldRequest:
        """A saved conversation: its tree with its own turn ids, the path ending at `current` shown; returns what
        the cache must hold for it. New turns are numbered after the saved ones."""
        self.system, self.pending = system, None
        text = self._ready()
        # A saved reply's thinking is in its ids: split as at the end of its turn.
        self.tree = TurnTree((replace(t, thought=text.split_reply(t.reply_ids)) for t in turns), current)
        self.turn_count = max([self.turn_count, *self.tree.turns])
        return self.hold_request(current)
