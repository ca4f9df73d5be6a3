"""What crosses to the engine thread: token ids and settings, never text or a tree.

The conversation's owner renders its turns to ids on its own thread (model.runtime.conversation);
these requests carry the ids to the cache service (model.runtime.cache_service) and say what to
do with them. Each names the sink: the system block's length in tokens, which the cache pins.
"""

from dataclasses import dataclass, field

from model.runtime.settings import DecodeSettings


@dataclass(frozen=True, kw_only=True)
class TurnRequest:
    """Make the cache hold `ids`, then decode a reply: TurnStarted, PrefillProgress.., PrefillDone, TokenGenerated..,
    then TurnEnded (or TurnFailed), each with `turn_id`."""

    turn_id: int  # the asker's id for the turn; the events carry it back
    ids: tuple[int, ...]  # the prompt as rendered, then a fork's forced reply start
    sink: int  # tokens of the system block at the start of `ids`: pinned (unless --keep says otherwise)
    reply_prefix: tuple[int, ...] = ()  # the end of `ids` that is the reply's forced start (a fork)
    opens_thinking: bool = False  # the prompt before `reply_prefix` ends inside a <think> block
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    note: str = ""  # the asker's warning for this turn, shown with the engine's own in TurnStarted


@dataclass(frozen=True, kw_only=True)
class HoldRequest:
    """Make the cache hold exactly `ids` (a path shown, a saved chat reopened): CacheHeld."""

    ids: tuple[int, ...]
    sink: int


@dataclass(frozen=True, kw_only=True)
class ScoreRequest:
    """Read `reply` again after `prompt`, each token's probability and top-k: ReplyScored (or TurnFailed)."""

    turn_id: int
    prompt: tuple[int, ...]  # ends with the generation prompt
    reply: tuple[int, ...]
    top_k: int
