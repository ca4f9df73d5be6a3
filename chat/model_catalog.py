"""The models a user can open from the Models screen: the default, those opened before, and the Hub cache.

Each is described from its header or config.json only (see `model.loading.describe`),
so listing a cache of many gigabytes takes a moment, not a load. The screen calls
this on a worker thread.
"""

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Optional

from model.errors import ModelError
from model.loading import hub
from model.loading.default_model import default_model_path
from model.loading.describe import ModelCard, describe_path

DEFAULT_NAME = "SmolLM2-135M-Instruct Q4_1"
RECENT_KEPT = 10  # models remembered in the settings file


def catalog(recent: Sequence[str], cache_dir: Optional[Path] = None) -> list[ModelCard]:
    """The default model first, then the recent ones (newest first), then the rest of the Hub cache."""
    cards = [default_card()]
    cached = hub.cached_models(cache_dir)
    by_source = {card.source: card for card in cached}
    for source in recent:
        if source in by_source:
            cards.append(replace(by_source.pop(source), where="recent · Hub cache"))
        elif Path(source).expanduser().exists():
            cards.append(describe_path(Path(source).expanduser(), where="recent"))
        elif looks_like_hub_id(source):
            cards.append(
                ModelCard(source, source, where="recent", problem="not in the Hub cache: loading downloads it")
            )
        else:
            cards.append(ModelCard(source, Path(source).name or source, where="recent", problem="not found"))
    return cards + [card for card in cached if card.source in by_source]


def default_card() -> ModelCard:
    try:
        card = describe_path(default_model_path(), name=DEFAULT_NAME, where="default")
    except ModelError as exc:
        return ModelCard(None, DEFAULT_NAME, where="default", problem=str(exc))
    return replace(card, source=None)


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~", "/"))


def remembered(recent: Sequence[str], source: Optional[str]) -> list[str]:
    """The recent list with `source` first (a local path made absolute); the default model is not listed."""
    if source is None:
        return list(recent)
    path = Path(source).expanduser()
    entry = str(path.resolve()) if path.exists() else source
    return [entry, *(s for s in recent if s != entry)][:RECENT_KEPT]
