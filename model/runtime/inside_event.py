"""A watched step's readings (model.internals.watch) as the event the views get: positions named by their tokens."""

from model.internals.watch import Inside
from model.loading.tokenizer import TextTokenizer
from model.runtime.events import AttendedToken, InsideStep, TopToken

MOST_ATTENDED = 8  # positions named in an InsideStep


def inside_step(turn_id: int, index: int, inside: Inside, fed: list[int], tokenizer: TextTokenizer) -> InsideStep:
    """The event for a watched step; `fed` is every token fed before the step's query."""
    most = ()
    if inside.attention:
        # The cache holds the pinned sink, then everything after what was evicted.
        held = fed[: inside.sink] + fed[inside.sink + inside.evicted_total :]
        mean = inside.attention_mean
        if len(held) != len(mean):
            # The conversation's record and the cache disagree, so no name could be trusted,
            # nor the next turn's reuse of the cache: fail loudly (the turn ends, the cache is rebuilt).
            raise RuntimeError(f"the cache attends over {len(mean)} positions but holds {len(held)} known tokens")
        order = sorted(range(len(mean)), key=mean.__getitem__, reverse=True)[:MOST_ATTENDED]
        most = tuple(AttendedToken(position=p, text=tokenizer.piece(held[p]), weight=mean[p]) for p in order)
    lens = tuple(
        tuple(TopToken(id=i, text=tokenizer.piece(i), prob=p) for i, p in zip(ids, probs))
        for ids, probs in zip(inside.lens_ids, inside.lens_probs)
    )
    return InsideStep(
        turn_id=turn_id,
        index=index,
        layer=inside.layer,
        attention=inside.attention,
        sink=inside.sink,
        most_attended=most,
        lens=lens,
        lens_layers=inside.lens_layers,
        attention_mean=inside.attention_mean,
    )
