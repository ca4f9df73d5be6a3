"""The model a session runs: reading it (downloading it first if it is a Hub id), and the tokens that end a reply."""

from collections.abc import Callable
from pathlib import Path
from typing import Optional

from model.cache.settings import CacheSettings
from model.loading import hub
from model.loading.loader import LoadedModel, load_model
from model.loading.tokenizer import TextTokenizer
from model.runtime.events import DownloadProgress, Event, ModelLoading

END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<end_of_turn>",
)


def read_model(
    source: Optional[str],
    layout: str,
    emit: Callable[[Event], None],
    cancelled: Callable[[], bool],
    shard: Optional[Callable[[LoadedModel], LoadedModel]] = None,
    cache: CacheSettings = CacheSettings(),
) -> LoadedModel:
    """Load a model, reporting progress (and a download's bytes) as events; `cancelled` stops a download.
    A model that cannot fit beside a `cache` full to its capacity is refused before its weights are read."""

    def fetch_hub(repo_id: str) -> Path:
        def report(t) -> None:
            emit(
                DownloadProgress(
                    repo_id=t.repo_id, done_bytes=t.done_bytes, total_bytes=t.total_bytes, bytes_per_s=t.bytes_per_s
                )
            )

        return hub.fetch(repo_id, report, cancelled)

    loaded = load_model(
        source,
        layout,
        progress=lambda m: emit(ModelLoading(message=m)),
        fetch_hub=fetch_hub,
        capacity=cache.max_kv_size,
        kv_bits=cache.kv_bits,
    )
    return shard(loaded) if shard else loaded


def stop_ids(tokenizer: TextTokenizer) -> set[int]:
    """The ids that end a reply: end of sequence, and every end-of-turn marker this vocabulary has."""
    ids = {tokenizer.eos_id} | {tokenizer.token_id(t) for t in END_OF_TURN_TOKENS}
    ids.discard(None)
    return ids
