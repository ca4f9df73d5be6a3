"""What the open views need from each decode step: one value, read by the engine at every step.

Plain data (no MLX), so the UI can build it. Each extra costs the engine time
per token (the top-k, a watched layer's attention, the logit lens), so the
default asks for none of them, and a view asks only while it is open.
"""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class StepNeeds:
    top_k: int = 0  # rows of the sampled distribution's top-k at each step; 0 computes none
    attention_layer: Optional[int] = None  # the layer whose attention is watched; None: none
    lens_layers: Optional[tuple[int, ...]] = None  # the logit lens's layers, () for all; None: no lens
    # At most one watched step per this many seconds (the views redraw at most 2.5 times a second).
    interval_s: float = 0.4

    def __or__(self, other: "StepNeeds") -> "StepNeeds":
        """Two views' needs merged: each extra that either asks for (the first one's layer where both name one)."""
        return StepNeeds(
            top_k=max(self.top_k, other.top_k),
            attention_layer=self.attention_layer if self.attention_layer is not None else other.attention_layer,
            lens_layers=self.lens_layers if self.lens_layers is not None else other.lens_layers,
            interval_s=min(self.interval_s, other.interval_s),
        )

    @property
    def watched(self) -> bool:
        """Whether some steps run with a probe (see model.internals.watch)."""
        return self.attention_layer is not None or self.lens_layers is not None
