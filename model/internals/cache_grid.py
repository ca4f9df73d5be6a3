"""The KV cache as cells over the conversation's tokens: sink, held, evicted, new, free.

Plain arithmetic on the cache's counters (no MLX), so the UI can draw it from
event numbers alone. Every layer holds the same positions (eviction drops a
block from all of them at once), so one row stands for every layer.
"""

RANK = {s: r for r, s in enumerate(("free", "evicted", "held", "sink", "evicted_last", "new"))}


def grid_cells(
    history_len: int, keep: int, evicted_total: int, last_evicted: int, new_tokens: int, free: int = 0, buckets: int = 0
) -> list[str]:
    """One state per token of the conversation so far, oldest first, then `free` empty slots."""
    states = []
    for t in range(history_len):
        if t < keep:
            states.append("sink")
        elif t < keep + evicted_total:
            states.append("evicted_last" if t >= keep + evicted_total - last_evicted else "evicted")
        elif t >= history_len - new_tokens:
            states.append("new")
        else:
            states.append("held")
    states += ["free"] * free
    if buckets and len(states) > buckets:
        # A bucket shows its most telling state: new > evicted_last > sink > held > evicted > free.
        size = -(-len(states) // buckets)
        states = [max(states[i : i + size], key=RANK.__getitem__) for i in range(0, len(states), size)]
    return states
