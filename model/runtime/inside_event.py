"""A watched step's readings (model.internals.watch) as the event the views get: positions named by their tokens."""

from model.internals.watch import Inside
from model.loading.tokenizer import TextTokenizer
from model.runtime.events import AttendedToken, InsideStep, TopToken

MOST_ATTENDED = 8  # positions named in an InsideStep


def inside_step(turn: int, index: int, inside: Inside, fed: list[int], tokenizer: TextTokenizer) -> InsideStep:
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
        most = tuple(AttendedToken(p, tokenizer.piece(held[p]), mean[p]) for p in order)
    lens = tuple(
        tuple(TopToken(i, tokenizer.piece(i), p) for i, p in zip(ids, probs))
        for ids, probs in zip(inside.lens_ids, inside.lens_probs)
    )
    return InsideStep(
        turn, index, inside.layer, inside.attention, inside.sink, most, lens, inside.lens_layers, inside.attention_mean
    )
