"""Run settings the user chooses: sampling, prompt lookup, a reply's decode, and all options together.

Plain data, no MLX, so the UI can hold them. The KV cache's own settings are
`model.cache.settings.CacheSettings`. `EngineOptions` is every option of a run; the
engine reports the ones it adopted (`OptionsAdopted`), and its askers take them from there.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from model.cache.settings import CacheSettings

REPLY_ROOM = 32  # a message must leave at least this much of the cache for the reply
PREFILL_CHUNK = 256  # tokens a prefill step takes at most: bounds its peak memory; big enough to keep BLAS busy


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.0  # 0 means greedy (argmax)
    top_k: int = 0  # keep the k most likely tokens; 0 keeps all
    top_p: float = 1.0  # keep the smallest set whose probability reaches p
    min_p: float = 0.0  # drop tokens below min_p times the top token's probability
    repetition_penalty: float = 1.0  # >1 discourages tokens seen in the recent context
    repetition_window: int = 64  # how many recent tokens the penalty looks at
    seed: Optional[int] = None  # None draws a fresh seed per conversation

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def distribution_label(self) -> str:
        if self.greedy:
            return "model distribution (T=1); greedy pick"
        parts = [f"T={self.temperature:g}"]
        if self.top_k:
            parts.append(f"top-k {self.top_k}")
        if self.top_p < 1.0:
            parts.append(f"top-p {self.top_p:g}")
        if self.min_p > 0.0:
            parts.append(f"min-p {self.min_p:g}")
        return "sampled distribution (" + ", ".join(parts) + ")"


@dataclass(frozen=True)
class LookupSettings:
    """Prompt lookup, speculative decoding with the conversation as the draft (see model.runtime.speculate)."""

    enabled: Optional[bool] = None  # None: on where a verify pass costs little more than a step (speculate.pays_off)
    max_draft: int = 7  # guessed tokens per verify pass: 8 rows, what the few-row matvec kernel takes
    min_match: int = 2  # shortest n-gram that may guess (a single token recurs too often to predict)
    max_match: int = 4  # longest n-gram looked up first (a longer match is a better guess)
    patience: int = 3  # verify passes in a row that keep nothing before guessing rests
    rest: int = 16  # tokens the first rest lasts; it doubles while the misses go on

    def resolved(self, pays_off: bool) -> "LookupSettings":
        """`enabled` decided: as set, or (None) where it pays off on this model."""
        return self if self.enabled is not None else replace(self, enabled=pays_off)


@dataclass(frozen=True, kw_only=True)
class DecodeSettings:
    """How one reply is decoded: what a request brings, so each request (an app's turn, an API call) has its own."""

    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    max_tokens: int = 512
    lookup: LookupSettings = field(default_factory=LookupSettings)
    stop_ids: Optional[frozenset[int]] = None  # the ids that end the reply; None: the model's end-of-turn tokens
    top_logprobs: int = 0  # top-k rows at every step whatever the views ask (an API's logprobs)


@dataclass(frozen=True)
class EngineOptions:
    model: Optional[str] = None  # GGUF file, folder or Hub id; None is the default model
    layout: str = "auto"  # weight layout; see model.loading.weights.resolve_layout
    system: Optional[str] = None  # system prompt; None lets the template use its default
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    lookup: LookupSettings = field(default_factory=LookupSettings)  # prompt lookup (model.runtime.speculate)
    max_tokens: int = 512  # per reply
    top_k_shown: int = 10  # top-k rows per step while a view shows them
    thinking: Optional[bool] = None  # None: as the template has it; False asks a thinking model not to think
    prefill_chunk: int = PREFILL_CHUNK
    # Run on each loaded model before use: tensor parallel makes it this rank's share (model.distributed).
    shard: Optional[Callable[[Any], Any]] = None

    def decode(self) -> DecodeSettings:
        """A reply's decode settings under these options."""
        return DecodeSettings(sampling=self.sampling, max_tokens=self.max_tokens, lookup=self.lookup)
