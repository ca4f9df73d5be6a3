"""Turn a loaded model into one rank's share of it, in place (tensor parallel).

Each block keeps the rank's query/key/value heads (rows of q, k and v; the
matching input columns of o) and its MLP columns (rows of gate and up, input
columns of down). Attention then runs on local heads only, and the two
projections that read split inputs (o and down) each end in one `all_sum`,
so every rank leaves a block with the full residual stream.

MLX's `mlx.nn.layers.distributed` (`shard_linear`, `ShardedToAllLinear`) does
the same thing but cuts every weight into N equal parts; our default model's 3
KV heads do not split in 2, so we slice by explicit ranges (see `plan`) and
end in the same `all_sum` those layers use.

Embedding, final norm and head stay whole on every rank: for a decode step a
vocabulary split would add a gather of the logits per token, and the table is
a small part of any model large enough to need several machines.
"""

import mlx.core as mx
import mlx.nn as nn

from model.distributed.plan import Share
from model.errors import ModelError


class AllSum(nn.Module):
    """A projection over this rank's slice of its input; the ranks' partial outputs are summed."""

    def __init__(self, inner: nn.Module, group):
        super().__init__()
        self.inner = inner
        self._group = group  # not a parameter: the leading underscore keeps it out of the tree
        self._timer = None  # rank 0's StepTimer (see step_timer): a timed step times each sum alone

    def __call__(self, x: mx.array) -> mx.array:
        partial = self.inner(x)
        timer = self._timer
        if timer is not None and timer.active:
            return timer.collective(partial, lambda: mx.distributed.all_sum(partial, group=self._group))
        return mx.distributed.all_sum(partial, group=self._group)


def _rows(ranges: list[range]) -> mx.array:
    return mx.array([i for r in ranges for i in r], dtype=mx.int32)


def keep_outputs(linear: nn.Module, ranges: list[range]) -> None:
    """Keep the output rows in `ranges` (a quantized matrix packs along the input, so rows slice freely)."""
    idx = _rows(ranges)
    for name in ("weight", "scales", "biases", "bias"):
        if name in linear:
            linear[name] = mx.contiguous(linear[name][idx])


def keep_inputs(linear: nn.Module, cols: range) -> None:
    """Keep the input columns `cols`; a quantized matrix only at group boundaries."""
    if isinstance(linear, nn.QuantizedLinear):
        gs, per_word = linear.group_size, 32 // linear.bits
        if cols.start % gs or cols.stop % gs:
            raise ModelError(
                f"This model's quantization groups ({gs} weights) straddle the split: run it with --weights float16."
            )
        linear.weight = mx.contiguous(linear.weight[:, cols.start // per_word : cols.stop // per_word])
        for name in ("scales", "biases"):
            linear[name] = mx.contiguous(linear[name][:, cols.start // gs : cols.stop // gs])
    else:
        linear.weight = mx.contiguous(linear.weight[:, cols.start : cols.stop])
    # A bias would be added once per rank and so N times over: ours (o, down) have none.
    if "bias" in linear:
        raise ModelError("A bias on the attention output or MLP down projection cannot be split yet.")


def shard_block(block: nn.Module, share: Share, full_heads: int, full_kv: int, full_mlp: int, group) -> None:
    attn, mlp = block.self_attn, block.mlp
    hd = attn.head_dim
    q = range(share.q_heads.start * hd, share.q_heads.stop * hd)
    kv = range(share.kv_heads.start * hd, share.kv_heads.stop * hd)
    if hasattr(attn, "qkv_proj"):  # fused: rows are [q | k | v]
        k_at, v_at = full_heads * hd, (full_heads + full_kv) * hd
        keep_outputs(attn.qkv_proj, [q, range(k_at + kv.start, k_at + kv.stop), range(v_at + kv.start, v_at + kv.stop)])
        attn.q_end, attn.k_end = len(q), len(q) + len(kv)
    else:
        keep_outputs(attn.q_proj, [q])
        keep_outputs(attn.k_proj, [kv])
        keep_outputs(attn.v_proj, [kv])
    attn.n_heads, attn.n_kv_heads = len(share.q_heads), len(share.kv_heads)
    keep_inputs(attn.o_proj, q)
    attn.o_proj = AllSum(attn.o_proj, group)
    m = share.mlp
    if hasattr(mlp, "gate_up_proj"):  # fused: rows are [gate | up]
        keep_outputs(mlp.gate_up_proj, [m, range(full_mlp + m.start, full_mlp + m.stop)])
    else:
        keep_outputs(mlp.gate_proj, [m])
        keep_outputs(mlp.up_proj, [m])
    keep_inputs(mlp.down_proj, m)
    mlp.down_proj = AllSum(mlp.down_proj, group)


def shard_model(model: nn.Module, share: Share, group) -> None:
    """Make `model` this rank's share, in place; its `config` becomes the rank's (see `Share.config`)."""
    full = model.config
    for block in model.model.layers:
        shard_block(block, share, full.num_attention_heads, full.num_key_value_heads, full.intermediate_size, group)
    model.config = share.config(full)
    mx.eval(model.parameters())
