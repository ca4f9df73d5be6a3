"""What the engine tells its listeners. The UI, the CLI and the tests read the same stream."""

from dataclasses import dataclass
from typing import Optional

from model.cache.state import CacheState
from model.distributed.info import ClusterInfo, StepTiming
from model.runtime.stats import DraftCounts, PrefillStats, TurnStats


@dataclass(frozen=True)
class Event:
    """Base of every engine event."""


@dataclass(frozen=True)
class ModelLoading(Event):
    """Loading progress, one line."""

    message: str


@dataclass(frozen=True)
class ModelReady(Event):
    """The model is loaded; `info` is what the model-info panel shows."""

    info: dict
    cache: CacheState
    distribution: str  # which distribution the top-k panel shows


@dataclass(frozen=True)
class DownloadProgress(Event):
    """A Hub download's bytes so far, a few times a second while it runs (Esc / `cancel` stops it)."""

    repo_id: str
    done_bytes: int
    total_bytes: int  # 0 while unknown; grows as each file's size becomes known
    bytes_per_s: float  # over the last few seconds


@dataclass(frozen=True)
class SwitchFailed(Event):
    """Another model could not be loaded, or its download was cancelled; the model in use stays."""

    message: str
    model: Optional[str]  # the one asked for


@dataclass(frozen=True)
class ModelFailed(Event):
    """Loading failed; `message` is the one line to show."""

    message: str


@dataclass(frozen=True)
class TurnStarted(Event):
    """A user message reached the engine."""

    turn: int
    user: str
    prompt_tokens: int  # to prefill now
    reused_tokens: int  # already cached
    note: str = ""  # a warning to show, e.g. the message is longer than the cache
    parent: Optional[int] = None  # the turn this one follows (0: the system prompt); see model.runtime.branches
    reply_prefix: tuple[int, ...] = ()  # a fork's forced reply start: the kept tokens, then the forced one
    prefix_text: str = ""  # that start as text
    forked_at: Optional[int] = None  # reply token index the fork replaced
    token_forced: Optional[int] = None
    rebuilt: bool = False  # the branch point had been evicted: the prompt was read again from the sink
    rolled_back_tokens: int = 0  # taken off the cache first: a move to another branch, or a turn the template rewrote


@dataclass(frozen=True)
class PrefillProgress(Event):
    """A prefill chunk finished."""

    turn: int
    done: int
    total: int
    cache: CacheState


@dataclass(frozen=True)
class PrefillDone(Event):
    """The first token is ready; prefill's numbers are final."""

    turn: int
    stats: PrefillStats
    cache: CacheState


@dataclass(frozen=True)
class TopToken:
    id: int
    text: str  # readable piece (partial UTF-8 shown as \\xNN)
    prob: float


@dataclass(frozen=True)
class TokenGenerated(Event):
    """One decode step: the token, its text, the top-k it was drawn from, and the cache."""

    turn: int
    index: int  # 0 for the first generated token
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


@dataclass(frozen=True)
class ClusterStep(Event):
    """A decode step of a model split over ranks (after its TokenGenerated): the group now, and the latest timed step.

    At load the group is in ModelReady's `info["cluster"]`; a single process sends none of these."""

    turn: int
    index: int  # the TokenGenerated this follows
    cluster: ClusterInfo  # each rank's weight and KV bytes as of this step's forward pass
    timing: Optional[StepTiming]  # the latest step timed collective by collective (None: none yet)


@dataclass(frozen=True)
class AttendedToken:
    position: int  # in the cache, oldest first
    text: str  # readable piece
    weight: float  # attention, averaged over the heads


@dataclass(frozen=True)
class InsideStep(Event):
    """A watched decode step (only while the attention or logit-lens view is open; see model.internals.watch).

    `index` is the generated token this forward pass predicted: its attention
    is the query of the token before it, over every cached position."""

    turn: int
    index: int
    layer: Optional[int]  # attention layer; None when the attention view is closed
    attention: tuple[tuple[float, ...], ...]  # per head: weights over the cache's positions, oldest first
    sink: int  # the first `sink` positions are the pinned system prompt
    most_attended: tuple[AttendedToken, ...]  # by head-averaged weight, highest first
    lens: tuple[
        tuple[TopToken, ...], ...
    ]  # per layer read, bottom to top: its top tokens; () when the lens view is closed
    lens_layers: tuple[int, ...] = ()  # which layer each `lens` row is (the last layer always included)
    attention_mean: tuple[float, ...] = ()  # `attention` averaged over the heads


@dataclass(frozen=True)
class TurnEnded(Event):
    """The reply is complete (or stopped); `stats` holds the turn's final numbers."""

    turn: int
    text: str
    token_ids: tuple[int, ...]  # every generated id, the stop token included
    stats: TurnStats
    cache: CacheState
    reply_ids: tuple[int, ...] = ()  # the reply as the conversation keeps it (no stop token)
    path: tuple[int, ...] = ()  # turn numbers from the root to this one
    thinking: str = ""  # what the model thought before `text`, its answer (empty if it did not think)


@dataclass(frozen=True)
class TurnFailed(Event):
    """The message could not be answered; nothing was lost."""

    turn: int
    message: str


@dataclass(frozen=True)
class ConversationReset(Event):
    """The conversation and its cache were cleared."""

    cache: CacheState
    system: Optional[str] = None


@dataclass(frozen=True)
class BranchSwitched(Event):
    """The conversation moved to another path; its cache was restored (common prefix reused, the rest prefilled)."""

    turn: int  # the last turn of the path now shown (0: none, the system prompt alone)
    path: tuple[int, ...]
    prompt_tokens: int  # prefilled to restore it
    reused_tokens: int  # kept from the cache
    seconds: float
    cache: CacheState
    rebuilt: bool = False  # the common prefix had been evicted: read again from the sink


@dataclass(frozen=True)
class ReplyScored(Event):
    """A reply's tokens read again, for a reply that came without its steps (a saved chat's): see
    `model.runtime.rescore`. `steps` holds, per token, (id, text, probability, top-k)."""

    turn: int
    steps: tuple[tuple[int, str, float, tuple[TopToken, ...]], ...]


@dataclass(frozen=True)
class HistoryRestored(Event):
    """A saved conversation's history was prefilled into a fresh cache; the chat can go on."""

    messages: int
    tokens: int  # prefilled to rebuild the cache
    seconds: float
    cache: CacheState
    turn_offset: int = 0  # the saved turn numbered n is now turn n + turn_offset
    path: tuple[int, ...] = ()  # the turns of the path shown, as now numbered
