"""The cache's numbers at one moment, plain data: what the events carry to the panels and `--json`."""

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class CacheState:
    """What the cache panel and `--json` report; see the README's definitions."""

    tokens: int  # tokens held now
    capacity: int  # most tokens it will ever hold
    sink_tokens: int  # pinned at the front, never evicted
    evicted_total: int  # dropped so far in this conversation
    bytes: int  # K and V as allocated now (sum of nbytes)
    bytes_full: int  # K and V when every slot is allocated
    position: int  # RoPE position the next token gets
    dtype: str  # how K and V are stored
    last_evicted: int  # tokens dropped by the most recent eviction (0 if none yet)
    bytes_global: int = 0  # of `bytes`, the layers that attend to everything held
    bytes_windowed: int = 0  # of `bytes`, the sliding-window layers (bounded by their window)
    windowed_layers: int = 0  # how many layers are sliding-window ones (Gemma 2/3)
    window: int = 0  # their window in tokens; 0 when the model has none
    mlx_active: int = 0  # on the gpu path: bytes MLX's allocator holds now, everything included (0: not shown)
    mlx_peak: int = 0  # and the most it has held

    def as_dict(self) -> dict:
        return dict(self.__dict__)
