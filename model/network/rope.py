"""Rotary position embeddings: Llama 3's long-context rule, Phi-3's longrope, partial rotation."""

import math
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from model import compute_path
from model.errors import ModelError
from model.network.config import ModelConfig


def llama3_periods(dims: int, base: float, scaling: dict) -> mx.array:
    """Per-pair periods (1 / inverse frequency) after Llama 3's rescaling.

    Low frequencies (long wavelengths) are stretched by `factor`, high ones are
    kept, and the band between is blended smoothly, as in Meta's reference code.
    """
    factor = scaling["factor"]
    low_freq_factor = scaling.get("low_freq_factor", 1.0)
    high_freq_factor = scaling.get("high_freq_factor", 4.0)
    old_context = scaling.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = old_context / low_freq_factor
    high_freq_wavelen = old_context / high_freq_factor

    periods = base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims)
    wavelens = 2 * math.pi * periods
    periods = mx.where(wavelens > low_freq_wavelen, periods * factor, periods)
    is_medium = (wavelens > high_freq_wavelen) & (wavelens < low_freq_wavelen)
    smooth = (old_context / wavelens - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smooth_periods = periods / ((1 - smooth) / factor + smooth)
    return mx.where(is_medium, smooth_periods, periods)


class RoPE(nn.Module):
    """Rotates the first `rotary_dims` features of each head by its position (the rest pass through).

    `base` overrides the config's (Gemma 3's windowed layers have their own, unscaled);
    `scaled=False` ignores `rope_scaling`."""

    def __init__(self, config: ModelConfig, base: Optional[float] = None, scaled: bool = True):
        super().__init__()
        self.dims = config.rotary_dims
        self.traditional = config.rope_traditional
        self.base: Optional[float] = base or config.rope_theta
        self.scale = 1.0
        self.mscale = 1.0  # longrope's attention factor: q and k grow by it, so scores by its square
        self._periods: Optional[mx.array] = None  # underscore: not a checkpoint weight
        self._table: Optional[tuple[mx.array, mx.array]] = None  # cos, sin by position, for decode
        scaling = (config.rope_scaling or {}) if scaled else {}
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind in (None, "default"):
            pass
        elif kind == "linear":
            self.scale = 1.0 / scaling["factor"]
        elif kind == "llama3":
            self._set_periods(llama3_periods(self.dims, self.base, scaling))
        elif kind in ("longrope", "su"):
            self._set_longrope(config, scaling)
        else:
            raise ModelError(
                f"Unsupported RoPE scaling '{kind}': glasschat knows default, linear, llama3 and longrope."
            )

    def _set_periods(self, periods: mx.array) -> None:
        self._periods = periods
        self._table = None
        self.base = None

    def _set_longrope(self, config: ModelConfig, scaling: dict) -> None:
        """Phi-3's longrope: each pair's period stretched by its own factor, q and k scaled up.

        Like mlx-lm, the long factors are used at every length; llama.cpp and transformers
        use the short ones while the context stays within `original_max_position_embeddings`."""
        original = config.original_max_position_embeddings or config.max_position_embeddings
        stretch = config.max_position_embeddings / original
        default = math.sqrt(1 + math.log(stretch) / math.log(original)) if stretch > 1 else 1.0
        self.mscale = scaling.get("attn_factor") or scaling.get("long_mscale") or default
        if "long_factor" in scaling:  # a GGUF brings the factors as a tensor instead (set_gguf_freq_factors)
            self.set_gguf_freq_factors(mx.array(scaling["long_factor"], dtype=mx.float32))

    def set_gguf_freq_factors(self, factors: mx.array) -> None:
        """Per-pair factors that divide the frequencies (GGUF's Llama 3 rule, Phi-3's longrope)."""
        base_periods = self.base ** (mx.arange(0, self.dims, 2, dtype=mx.float32) / self.dims)
        self._set_periods(base_periods * factors.astype(mx.float32))

    def __call__(self, x: mx.array, offset: int) -> mx.array:
        # x: (B, heads, T, head_dim); row t gets position offset + t
        if self.mscale != 1.0:
            x = x.at[..., : self.dims].multiply(self.mscale)
        return self.rotate(x, offset)

    def rotate(self, x: mx.array, offset: int) -> mx.array:
        """The rotation alone (no longrope factor): what `shift` composes."""
        if x.shape[-2] == 1 and isinstance(offset, int) and offset >= 0 and compute_path.on_cpu():
            return self._rotate_one(x, offset)
        return mx.fast.rope(
            x,
            self.dims,
            traditional=self.traditional,
            base=self.base,
            scale=self.scale,
            offset=offset,
            freqs=self._periods,
        )

    def _rotate_one(self, x: mx.array, position: int) -> mx.array:
        """One decode position from a cos/sin table: on CPU, `fast.rope` costs ~0.2 ms a
        call whatever the size, and a decode step makes two per layer."""
        table_cos, table_sin = self.tables(position)
        cos, sin = table_cos[position], table_sin[position]  # (dims/2,)
        if self.dims < x.shape[-1]:  # partial rotation: the tail of each head passes through
            turned = _rotate(x[..., : self.dims], cos, sin, self.traditional)
            return mx.concatenate([turned, x[..., self.dims :]], axis=-1)
        return _rotate(x, cos, sin, self.traditional)

    def tables(self, last: int) -> tuple[mx.array, mx.array]:
        """cos and sin of every pair's angle by position, (positions, dims/2), up to at least `last`."""
        if self._table is None or last >= self._table[0].shape[0]:
            self._build_table(max(2 * last, 4096))
        return self._table

    def _build_table(self, positions: int) -> None:
        # Angles in float64: at position 8000 a float32 angle is already off by ~5e-4 rad.
        if self._periods is not None:
            periods = np.array(self._periods, dtype=np.float64)
        else:
            periods = self.base ** (np.arange(0, self.dims, 2, dtype=np.float64) / self.dims)
        angles = (np.arange(positions, dtype=np.float64) * self.scale)[:, None] / periods[None, :]
        self._table = (mx.array(np.cos(angles), dtype=mx.float32), mx.array(np.sin(angles), dtype=mx.float32))

    def shift(self, keys: mx.array, delta: int) -> mx.array:
        """Move every cached key by the same `delta` positions.

        Rotations compose, so R(p + delta) k = R(delta) R(p) k. Giving each row
        its own length-1 sequence makes `fast.rope` apply `delta` to all of them.
        """
        shifted = self.rotate(keys[..., None, :], delta)  # (B, heads, T, 1, head_dim)
        return shifted.reshape(keys.shape)


@mx.compile
def _rotate_interleaved(x, cos, sin):
    pairs = x.reshape(*x.shape[:-1], -1, 2)  # (..., dims/2, 2): traditional layout
    even, odd = pairs[..., 0], pairs[..., 1]
    return mx.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1).reshape(x.shape)


@mx.compile
def _rotate_halves(x, cos, sin):
    first, second = mx.split(x, 2, axis=-1)  # NeoX layout: pairs are (i, i + dims/2)
    return mx.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


def _rotate(x, cos, sin, traditional: bool):
    return (_rotate_interleaved if traditional else _rotate_halves)(x, cos, sin)
