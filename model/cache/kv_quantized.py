"""A KV cache stored in 4 or 8 bits, that still rotates.

mlx-lm cannot combine its rotating and quantized caches. Here the layout and
eviction are the plain cache's (see `kv_cache`); only storage differs: each
of K and V is a (packed, scales, biases) triple, handed to attention as a
`QuantizedKV`, which runs on it with `quantized_matmul`, so the
full-precision cache is never materialised.
An eviction dequantizes just the surviving block, re-rotates it, and
quantizes it again, once per eviction (a windowed layer's own drops, and a
layer without RoPE, move the stored bits as they are).
"""

from collections.abc import Sequence
from typing import Any, Optional, Union

import mlx.core as mx

from model.cache.kv_cache import KVCache, LayerCache, Shift
from model.errors import ModelError
from model.network.attention import QuantizedKV
from model.network.config import ModelConfig


class QuantizedLayerCache(LayerCache):
    def _quantize(self, x):
        return mx.quantize(x, group_size=self.owner.group_size, bits=self.owner.bits)

    def _dequantize(self, triple):
        return mx.dequantize(*triple, group_size=self.owner.group_size, bits=self.owner.bits)

    def write(self, slot: int, k: mx.array, v: mx.array) -> None:
        end = slot + k.shape[2]
        for store, new in ((self.keys, self._quantize(k)), (self.values, self._quantize(v))):
            for part, value in zip(store, new):
                part[..., slot:end, :] = value

    def fetch(self, begin: int, end: int) -> tuple[QuantizedKV, QuantizedKV]:
        gs, bits = self.owner.group_size, self.owner.bits
        keys = QuantizedKV(*(x[..., begin:end, :] for x in self.keys), gs, bits)
        values = QuantizedKV(*(x[..., begin:end, :] for x in self.values), gs, bits)
        return keys, values

    def allocated(self) -> int:
        return self.keys[0].shape[2]

    def allocate(self, shape: tuple[int, int, int, int], dtype: Optional[mx.Dtype] = None) -> None:
        B, H, S, D = shape
        bits, gs, dtype = self.owner.bits, self.owner.group_size, dtype or self.owner.dtype

        def triple() -> list[mx.array]:
            return [
                mx.zeros((B, H, S, D * bits // 32), mx.uint32),
                mx.zeros((B, H, S, D // gs), dtype),
                mx.zeros((B, H, S, D // gs), dtype),
            ]

        new_k, new_v = triple(), triple()
        if self.keys is not None:
            n = min(self.keys[0].shape[2], S)
            for new, old in ((new_k, self.keys), (new_v, self.values)):
                for part, value in zip(new, old):
                    part[..., :n, :] = value[..., :n, :]
        self.keys, self.values = new_k, new_v

    def slide(self, src, dst, count, turn) -> None:
        """Values move as stored; keys that turn are dequantized, turned and quantized again (once per eviction)."""
        if turn is None:
            moved = [x[..., src : src + count, :] for x in self.keys]
        else:
            moved = self._quantize(turn(self._dequantize([x[..., src : src + count, :] for x in self.keys])))
        for part, value in zip(self.keys, moved):
            part[..., dst : dst + count, :] = value
        for part in self.values:
            part[..., dst : dst + count, :] = part[..., src : src + count, :]

    def nbytes(self) -> int:
        return 0 if self.keys is None else sum(x.nbytes for x in (*self.keys, *self.values))


class QuantizedKVCache(KVCache):
    layer_class = QuantizedLayerCache

    def __init__(
        self,
        config: ModelConfig,
        capacity: int,
        shift_keys: Union[Shift, Sequence[Optional[Shift]]],
        bits: int = 8,
        dtype: mx.Dtype = mx.float32,
        **kwargs: Any,
    ):
        if bits not in (4, 8):
            raise ValueError("kv bits must be 4 or 8")
        if config.head_dim % 32:
            raise ModelError(f"--kv-bits needs a head size divisible by 32; this model's is {config.head_dim}.")
        self.bits = bits
        # Groups of 32, not mlx-lm's 64: SmolLM2's keys have outlier channels,
        # and at 64 the 8-bit cache moved next-token log-probs by up to 0.45
        # on the golden prompts (0.27 at 32), enough to flip near-ties.
        self.group_size = 32
        super().__init__(config, capacity, shift_keys, dtype=dtype, **kwargs)

    def bytes_per_slot(self) -> int:
        d, groups = self.config.head_dim, self.config.head_dim // self.group_size
        per_head = d * self.bits // 8 + 2 * groups * self.dtype.size
        return 2 * self.config.num_key_value_heads * per_head

    def dtype_name(self) -> str:
        return f"q{self.bits} (group {self.group_size}, {super().dtype_name()} scales)"
