"""What the engine tells its listeners. The UI, the headless commands and the tests read the same stream.

Every event is built by keyword (`kw_only`): several carry a handful of integers, and
two swapped ones must not pass unnoticed. The engine reports what it did to the cache
and the model; the conversation (its tree, its turns) belongs to whoever asked, so an
event names a turn only by the `turn_id` the request gave it.
"""

from dataclasses import dataclass
from typing import Optional

from model.cache.state import CacheState
from model.distributed.info import ClusterInfo, StepTiming
from model.runtime.settings import EngineOptions
from model.runtime.stats import DraftCounts, PrefillStats, TurnStats


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every engine event."""


@dataclass(frozen=True, kw_only=True)
class ModelLoading(Event):
    """Loading progress, one line."""

    message: str


@dataclass(frozen=True, kw_only=True)
class ModelReady(Event):
    """The model is loaded (its text side: `ChatEngine.text()`); `info` is what the model-info panel shows."""

    info: dict
    cache: CacheState
    distribution: str  # which distribution the top-k panel shows


@dataclass(frozen=True, kw_only=True)
class DownloadProgress(Event):
    """A Hub download's bytes so far, a few times a second while it runs (Esc / `cancel` stops it)."""

    repo_id: str
    done_bytes: int
    total_bytes: int  # 0 while unknown; grows as each file's size becomes known
    bytes_per_s: float  # over the last few seconds


@dataclass(frozen=True, kw_only=True)
class SwitchFailed(Event):
    """Another model could not be loaded, or its download was cancelled; the model in use stays."""

    message: str
    model: Optional[str]  # the one asked for


@dataclass(frozen=True, kw_only=True)
class ModelFailed(Event):
    """Loading failed; `message` is the one line to show."""

    message: str


@dataclass(frozen=True, kw_only=True)
class OptionsAdopted(Event):
    """The options now in force. The asker takes them from here, never before (a cache setting may be refused)."""

    options: EngineOptions
    cache: Optional[CacheState]  # None while no model is loaded
    cache_reset: bool = False  # a new cache setting: the cache was made again, empty (a new conversation)


@dataclass(frozen=True, kw_only=True)
class OptionsRefused(Event):
    """Options the engine could not take (a cache that does not fit this model); `options` are still in force."""

    message: str
    options: EngineOptions


@dataclass(frozen=True, kw_only=True)
class TurnStarted(Event):
    """A turn reached the engine and its cache was brought to the prompt: what is reused, what is read."""

    turn_id: int
    prompt_tokens: int  # to prefill now
    reused_tokens: int  # already cached
    note: str = ""  # a warning to show, e.g. the message is longer than the cache
    prefix_text: str = ""  # a fork's forced reply start (the kept tokens, then the forced one), as text
    rebuilt: bool = False  # the branch point had been evicted: the prompt was read again from the sink
    rolled_back_tokens: int = 0  # taken off the cache first: a move to another branch, or a turn the template rewrote


@dataclass(frozen=True, kw_only=True)
class PrefillProgress(Event):
    """A prefill chunk finished (of a turn, or of a path the cache was asked to hold: `turn_id` 0)."""

    turn_id: int
    done: int
    total: int
    cache: CacheState


@dataclass(frozen=True, kw_only=True)
class PrefillDone(Event):
    """The first token is ready; prefill's numbers are final."""

    turn_id: int
    stats: PrefillStats
    cache: CacheState


@dataclass(frozen=True, kw_only=True)
class TopToken:
    id: int
    text: str  # readable piece (partial UTF-8 shown as \\xNN)
    prob: float


@dataclass(frozen=True, kw_only=True)
class TokenGenerated(Event):
    """One decode step: the token, its text, the top-k it was drawn from, and the cache."""

    turn_id: int
    index: int  # in the reply: 0 for its first token (a fork's forced start counts)
    token_id: int
    text: str  # newly complete text (may be empty mid-character)
    prob: float  # probability the sampled token had
    top_k: tuple[TopToken, ...]
    live_tok_s: float
    elapsed_s: float  # since the request reached the engine
    cache: CacheState
    thinking: bool = False  # between <think> and </think>, both included (see model.runtime.thinking)
    drafted: bool = False  # guessed by prompt lookup and confirmed by the model
    drafts: DraftCounts = DraftCounts()  # prompt lookup in this reply so far


@dataclass(frozen=True, kw_only=True)
class ClusterStep(Event):
    """A decode step of a model split over ranks (after its TokenGenerated): the group now, and the latest timed step.

    At load the group is in ModelReady's `info["cluster"]`; a single process sends none of these."""

    turn_id: int
    index: int  # the TokenGenerated this follows
    cluster: ClusterInfo  # each rank's weight and KV bytes as of this step's forward pass
    timing: Optional[StepTiming]  # the latest step timed collective by collective (None: none yet)


@dataclass(frozen=True, kw_only=True)
class AttendedToken:
    position: int  # in the cache, oldest first
    text: str  # readable piece
    weight: float  # attention, averaged over the heads


@dataclass(frozen=True, kw_only=True)
class InsideStep(Event):
    """A watched decode step (only while the attention or logit-lens view is open; see model.internals.watch).

    `index` is the generated token this forward pass predicted: its attention
    is the query of the token before it, over every cached position."""

    turn_id: int
    index: int
    layer: Optional[int]  # attention layer; None when the attention view is closed
    attention: tuple[tuple[float, ...], ...]  # per head: weights over the cache's positions, oldest first
    sink: int  # the first `sink` positions are the pinned system prompt
    most_attended: tuple[AttendedToken, ...]  # by head-averaged weight, highest first
    lens: tuple[tuple[TopToken, ...], ...]  # per layer read, bottom to top: its top tokens; () when the lens is closed
    lens_layers: tuple[int, ...] = ()  # which layer each `lens` row is (the last layer always included)
    attention_mean: tuple[float, ...] = ()  # `attention` averaged over the heads


@dataclass(frozen=True, kw_only=True)
class TurnEnded(Event):
    """The reply is complete (or stopped); `stats` holds the turn's final numbers."""

    turn_id: int
    text: str  # the answer (a thinking model's thinking is apart, in `thinking`)
    token_ids: tuple[int, ...]  # the whole reply: a fork's forced start, then every generated id, a stop token included
    stats: TurnStats
    cache: CacheState
    reply_ids: tuple[int, ...] = ()  # the reply as the conversation keeps it (no stop token)
    thinking: str = ""  # what the model thought before `text` (empty if it did not think)


@dataclass(frozen=True, kw_only=True)
class TurnFailed(Event):
    """The request could not be served; nothing was lost."""

    turn_id: int  # the turn asked for (0 for a request that was not a turn)
    message: str


@dataclass(frozen=True, kw_only=True)
class ConversationReset(Event):
    """The cache was emptied for a new conversation, with a fresh random key."""

    cache: CacheState


@dataclass(frozen=True, kw_only=True)
class CacheHeld(Event):
    """The cache now holds the ids it was asked to (another branch shown, a saved chat reopened): how it got there."""

    prompt_tokens: int  # prefilled
    reused_tokens: int  # kept from what it held
    rolled_back_tokens: int  # taken off first
    rebuilt: bool  # the shared start had been evicted: the sink was kept and the rest read again
    seconds: float
    cache: CacheState


@dataclass(frozen=True, kw_only=True)
class ReplyScored(Event):
    """A reply's tokens read again, for a reply that came without its steps (a saved chat's): see
    `model.runtime.rescore`. `steps` holds, per token, (id, text, probability, top-k)."""

    turn_id: int
    steps: tuple[tuple[int, str, float, tuple[TopToken, ...]], ...]
