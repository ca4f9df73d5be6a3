"""The views, as one table: the chat screen's layout, keys, palette entries, help rows and the UI bench's
settings are all made from it.

Adding a view is one widget module (an `EngineView` that marks the events it draws) and one row here.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from model.internals.needs import StepNeeds

from .widgets.attention_panel import AttentionPanel
from .widgets.cache_grid_panel import CacheGridPanel
from .widgets.cache_panel import CachePanel
from .widgets.cluster_panel import ClusterPanel
from .widgets.confidence import ConfidenceText
from .widgets.decode_panel import DecodePanel
from .widgets.lens_panel import LensPanel
from .widgets.prefill_panel import PrefillPanel
from .widgets.topk_panel import TopKPanel


def nothing(_view: Any) -> StepNeeds:
    return StepNeeds()


def top_k(_view: Any) -> StepNeeds:
    """The top-k at every step; how many rows is the app's (`--show-top`), which the screen asks for."""
    return StepNeeds(top_k=1)


@dataclass(frozen=True)
class ViewSpec:
    """One view: what it is called, where it sits, its key, and what it costs the engine while open."""

    id: str  # the widget's id, and the name `toggle_view` takes
    key: str  # shows or hides it
    title: str  # its border title, and its name in the palette and the help
    caption: str  # one line under it: what it teaches
    about: str  # the help screen's paragraph
    widget: type  # an EngineView widget; a "reply" view is built from a reply's steps
    shown: bool = True  # open when the app starts
    needs: Callable[[Any], StepNeeds] = nothing  # asked of the open view (its widget, or None for a reply view)
    place: str = "sidebar"  # or "reply": drawn in place of each reply, in the transcript
    focus_keys: str = ""  # the keys it takes once focused, for the help

    def build(self) -> Any:
        """The sidebar widget, titled and captioned from this row."""
        widget = self.widget(id=self.id)
        widget.border_title = self.title
        widget.caption = self.caption
        widget.display = self.shown
        return widget


# In layout order, top to bottom (the help lists them by key).
VIEWS: list[ViewSpec] = [
    ViewSpec(
        "prefill",
        "f2",
        "Prefill",
        "Reading the prompt: all new tokens at once.",
        "the new prompt tokens this turn had to read, and the tokens reused from the cache. "
        "Prefill time runs from your message reaching the engine to the first reply token being ready.",
        PrefillPanel,
    ),
    ViewSpec(
        "decode",
        "f3",
        "Decode",
        "Writing: one forward pass per token.",
        "tokens per second while the reply is written, one forward pass per token. "
        "The reply figure is (tokens − 1) / (last token time − first token time).",
        DecodePanel,
    ),
    ViewSpec(
        "cache",
        "f4",
        "KV cache",
        "Keys and values of the tokens read so far.",
        "the keys and values stored for every token read so far. Magenta is the pinned system prompt "
        "(the sink); when the cache is full, the oldest tokens after it are evicted in a block, so memory "
        "stays flat.",
        CachePanel,
    ),
    ViewSpec(
        "grid",
        "f6",
        "KV cache grid",
        "Layers × tokens; a prefill fills a block, decode one column.",
        "the cache as layers × tokens: sink, held, new this step, just evicted.",
        CacheGridPanel,
        shown=False,
    ),
    ViewSpec(
        "topk",
        "f5",
        "Next token",
        "Every token gets a score; ▶ is the pick.",
        "the most likely next tokens and their probabilities under the distribution the reply is drawn "
        "from; ▶ marks the token picked. `·` is a space, `↵` a newline.",
        TopKPanel,
        needs=top_k,
    ),
    ViewSpec(
        "attention",
        "f7",
        "Attention",
        "softmax(q·kᵀ/√d): where the new token looks.",
        "for the token being written, its softmax(q·kᵀ/√d) weights over every cached token, in the layer "
        "you pick; the first token often takes a big share (an attention sink).",
        AttentionPanel,
        shown=False,
        needs=lambda panel: StepNeeds(attention_layer=panel.attention_layer),
        focus_keys="focus it: ←/→ layer, h heads",
    ),
    ViewSpec(
        "lens",
        "f8",
        "Logit lens",
        "Each layer's guess, read through the head.",
        "each layer's running guess, read through the final norm and the output head; the top row is the "
        "model's own prediction.",
        LensPanel,
        shown=False,
        needs=lambda panel: StepNeeds(lens_layers=panel.layers_wanted()),
    ),
    ViewSpec(
        "cluster",
        "f10",
        "Cluster",
        "Who holds what; talk vs work per step.",
        "with the model split over ranks (--ranks N, --hostfile), who holds what: each rank's host, its query "
        "heads (tensor parallel) or its run of blocks (--pipeline), its weight and KV-cache bytes, as the ranks "
        "report them every step; and per decode step, the time rank 0 spent in its collectives (comm: the "
        "step's header and ids, then 2 all_sums per layer or the hops round the ring, waiting for any slower "
        "rank included) against the rest of its forward pass (compute), measured inside a timed step (the first "
        "of each reply, then at most 2.5 a second). 'msgs alone' is the same messages timed back to back at "
        "start. With one process it says so: nothing is split.",
        ClusterPanel,
        shown=False,
    ),
    ViewSpec(
        "confidence",
        "f9",
        "Confidence colouring",
        "Each token tinted by its probability when sampled.",
        "each reply token tinted by the probability it had when it was sampled.",
        ConfidenceText,
        shown=False,
        # It keeps each step's top-k, to show again under the cursor.
        needs=top_k,
        place="reply",
        focus_keys="focus a reply: ←/→ shows a token's top-k, ↑/↓ and Enter fork the reply there",
    ),
]


def by_key(views: list[ViewSpec]) -> list[ViewSpec]:
    """The views in the order of their keys (F2 before F10)."""
    return sorted(views, key=lambda spec: (len(spec.key), spec.key))
