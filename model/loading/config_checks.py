"""A model's config checked before anything is built: one line naming the file, the field and the value.

Unchecked, a broken or hostile config reached the network's constructor: 100,000 layers died
after 19 s in `std::bad_alloc` (SIGABRT, nothing saved), 0 attention heads ended in
ZeroDivisionError and a negative hidden size in "math domain error", none naming the field.
Three checks, in the order the loader can make them:

1. `hf_config` / `gguf_config`: each value the network reads, before any arithmetic on it, is a
   whole number (or a finite float) in a plausible range (`LIMITS`), and the config built from
   them is consistent (heads divide, kv heads divide heads, q's width near the hidden size).
2. `check_weights`: the config against the shapes of the tensors in the file: the layers it
   holds, the embedding's rows, each projection's rows (rows, because quantization packs only
   the last axis). A config that passes describes exactly the tensors the file holds, so
   building the model allocates no more than the weights themselves: the memory fit check
   (issue 22) then compares that with the machine.

The bounds are several times the largest released model's (Llama 3.1 405B: hidden 16384, 126
layers, 128 heads; Gemma 3: 262,144 tokens); past them a config is a mistake, whatever the
machine. No MLX here: the Models screen runs the first check on its worker thread.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Optional

from model.errors import ModelError
from model.loading import families
from model.loading.config import config_from_gguf, config_from_hf
from model.network.config import ModelConfig

# field -> (smallest, largest). Whole numbers unless the smallest is a float.
LIMITS: dict[str, tuple[float, float]] = {
    "hidden_size": (1, 65_536),  # 4x Llama 3.1 405B's 16,384
    "num_hidden_layers": (1, 1_024),  # 8x its 126
    "num_attention_heads": (1, 1_024),  # 8x its 128
    "num_key_value_heads": (1, 1_024),
    "head_dim": (2, 1_024),  # Gemma 2's 256 is the largest in use; RoPE turns pairs, so at least 2
    "intermediate_size": (1, 262_144),  # 5x its 53,248
    "vocab_size": (1, 4_194_304),  # 16x Gemma 3's 262,144
    # Llama 4 Scout's 10M fits; under 64 tokens (the smallest cache glasschat makes, MIN_CAPACITY) no chat
    # fits: a context of 1 ran, evicting every token, and answered "---".
    "max_position_embeddings": (64, 1 << 24),
    "sliding_window": (1, 1 << 24),
    "original_max_position_embeddings": (1, 1 << 24),
    "rms_norm_eps": (0.0, 1.0),  # a floor added to a mean of squares: positive, far under 1
    "rope_theta": (0.0, 1e12),  # Llama 3's is 500,000; Qwen's long-context models 1e7
    "rope_local_theta": (0.0, 1e12),
    "partial_rotary_factor": (0.0, 1.0),  # the share of each head RoPE turns (Phi-4-mini: 0.75)
    "attn_logit_softcap": (0.0, 1e6),
    "final_logit_softcap": (0.0, 1e6),
    "query_pre_attn_scalar": (0.0, 1e6),
    "embed_scale": (0.0, 1e6),
}
# Keys of config.json that only the family switches read, used as a period: 0 divides by zero.
HF_PERIODS = {"sliding_window_pattern": (1, 1_024), "no_rope_layer_interval": (1, 1_024)}
# The few fields whose config.json key is not the field's name.
HF_KEYS = {
    "architecture": "model_type",
    "rope_local_theta": "rope_local_base_freq",
    "attn_logit_softcap": "attn_logit_softcapping",
    "final_logit_softcap": "final_logit_softcapping",
}
# field -> llama.cpp's key, after "<arch>."
GGUF_KEYS = {
    "hidden_size": "embedding_length",
    "num_hidden_layers": "block_count",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
    "head_dim": "attention.key_length",
    "intermediate_size": "feed_forward_length",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "context_length",
    "rms_norm_eps": "attention.layer_norm_rms_epsilon",
    "rope_theta": "rope.freq_base",
    "rope_local_theta": "rope.freq_base_swa",
    "sliding_window": "attention.sliding_window",
    "original_max_position_embeddings": "rope.scaling.original_context_length",
    "attn_logit_softcap": "attn_logit_softcapping",
    "final_logit_softcap": "final_logit_softcapping",
}
_GGUF_ONLY = {"rope.dimension_count": (2, 1_024)}  # Phi-3's rotated width, read by its switches

Naming = Callable[[str], str]  # a field's name as the file spells it


def _bad(file: str, key: str, value: Any, want: str) -> ModelError:
    if isinstance(value, float):
        shown = f"{value:g}"
    else:  # whole numbers in full: 2^63 is recognisable as 9223372036854775808
        shown = str(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    return ModelError(f"{file}: '{key}' is {shown[:60]}; it must be {want}. The model's config is broken.")


def check_value(file: str, key: str, value: Any, low: float, high: float) -> None:
    """One number: the right kind, finite, in [low, high] (floats: above low, which is excluded)."""
    if isinstance(low, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _bad(file, key, value, f"a number above {low:g} and at most {high:g}")
        if not low < value <= high:
            raise _bad(file, key, value, f"a number above {low:g} and at most {high:g}")
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(file, key, value, f"a whole number from {low} to {high}")


def hf_config(raw: Any, file: str = "config.json") -> ModelConfig:
    """`config_from_hf` on a checked `config.json`, checked again once built."""
    if not isinstance(raw, dict):
        raise ModelError(f"{file} is not a JSON object of settings: the model's config is broken.")
    families.check_hf(str(raw.get("model_type", "?")), raw)
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        if field not in raw:
            raise ModelError(f"{file} lacks '{field}': the model's config is incomplete.")
    check_hf_values(raw, file)
    config = _built(lambda: config_from_hf(raw), file)
    check_config(config, file, field_namer("hf"))
    return config


def check_hf_values(raw: dict, file: str = "config.json") -> None:
    """Each value of `config.json` the network reads, as written (the Models screen's check too)."""
    for key, value in raw.items():
        field = next((f for f, k in HF_KEYS.items() if k == key), key)
        if field in LIMITS and value is not None:
            check_value(file, key, value, *LIMITS[field])
        elif key in HF_PERIODS and value is not None:
            check_value(file, key, value, *HF_PERIODS[key])
    if isinstance(raw.get("num_hidden_layers"), int):
        _check_layer_lists(raw, file)


def _check_layer_lists(raw: dict, file: str) -> None:
    """Lists with one entry per layer, and the RoPE scaling dictionary, before the families read them."""
    n = raw["num_hidden_layers"]
    for key in ("layer_types", "no_rope_layers"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, list) or len(value) != n):
            raise _bad(file, key, value, f"a list of {n} entries, one per layer")
    scaling = raw.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise _bad(file, "rope_scaling", scaling, "a dictionary or null")


def gguf_config(meta: dict, tensor_names: set[str], file: str) -> ModelConfig:
    """`config_from_gguf` on checked metadata, checked again once built."""
    arch = str(meta.get("general.architecture", "?"))
    _built(lambda: families.check_gguf(arch, meta), file)
    check_gguf_values(meta, file)
    config = _built(lambda: config_from_gguf(meta, tensor_names), file)
    check_config(config, file, field_namer("gguf", arch))
    return config


def check_gguf_values(meta: dict, file: str) -> None:
    """Each metadata value the network reads, as stored (the Models screen's check too)."""
    arch = str(meta.get("general.architecture", "?"))
    keys = {f"{arch}.{k}": LIMITS[f] for f, k in GGUF_KEYS.items()}
    keys.update({f"{arch}.{k}": limits for k, limits in _GGUF_ONLY.items()})
    for key, limits in keys.items():
        if key in meta:
            check_value(file, key, gguf_number(meta[key], file, key), *limits)


def gguf_number(value: Any, file: str, key: str):
    """A metadata value as a Python number; arrays and text are refused (they are one number in every family we run)."""
    if hasattr(value, "item"):
        if getattr(value, "size", 1) != 1 or getattr(value, "ndim", 0) != 0:
            raise _bad(file, key, f"an array of {getattr(value, 'size', '?')} values", "a single number")
        value = value.item()
    if isinstance(value, (str, list)):
        raise _bad(file, key, value, "a number")
    return value


def _built(build: Callable[[], Any], file: str) -> Any:
    """The config, or one line if a value the checks above do not cover still breaks it."""
    try:
        return build()
    except ModelError:
        raise
    except KeyError as exc:
        raise ModelError(f"{file} lacks {exc}: it is incomplete; re-download it.")
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError, IndexError) as exc:
        what = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
        raise ModelError(f"{file} holds a value glasschat cannot use ({what}): the model's config is broken.")


# The fields the network reads as numbers: those ModelConfig gives no None default.
_NEEDED = {f.name for f in dataclasses.fields(ModelConfig) if f.default is not None} & set(LIMITS)


def check_config(config: ModelConfig, file: str, name: Naming) -> None:
    """Every number in range, and the numbers consistent with each other."""
    for field, limits in LIMITS.items():
        value = getattr(config, field)
        if value is not None or field in _NEEDED:  # null in config.json: a bare TypeError later (found by fuzzing)
            check_value(file, name(field), value, *limits)
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    if heads % kv:
        raise ModelError(
            f"{file}: '{name('num_key_value_heads')}' is {kv}, which does not divide "
            f"'{name('num_attention_heads')}' ({heads}): each key/value head serves a whole group of query heads."
        )
    width, hidden = heads * config.head_dim, config.hidden_size
    # q's width is the hidden size in most families; Qwen3 0.6B's is 2x, Gemma 2 2B's 0.9x.
    if not (hidden <= 8 * width and width <= 8 * hidden):
        raise ModelError(
            f"{file}: {heads} heads of {config.head_dim} ('{name('num_attention_heads')}' x '{name('head_dim')}') "
            f"make {width} features against a hidden size of {hidden}: one of the three is wrong."
        )
    if config.rotary_dims % 2 or config.rotary_dims < 2:
        raise ModelError(
            f"{file}: RoPE would turn {config.rotary_dims} features of each head "
            f"(head_dim {config.head_dim} x {config.partial_rotary_factor:g}); it turns pairs, so it must be even."
        )
    n = config.num_hidden_layers
    for field in ("sliding_layers", "no_rope_layers"):
        outside = [i for i in getattr(config, field) if not 0 <= i < n]
        if outside:
            raise ModelError(f"{file}: {field} names layer {outside[0]}, but the model has {n} layers (0 to {n - 1}).")
    _check_rope_scaling(config, file)


def _check_rope_scaling(config: ModelConfig, file: str) -> None:
    """The numbers RoPE's rules divide by (see `model.network.rope`)."""
    scaling = config.rope_scaling or {}
    for key in ("factor", "attn_factor", "long_mscale", "low_freq_factor", "high_freq_factor"):
        if scaling.get(key) is not None:
            check_value(file, f"rope_scaling.{key}", scaling[key], 0.0, 1e6)
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in ("linear", "llama3") and "factor" not in scaling:
        raise ModelError(f"{file}: rope_scaling of type {kind} lacks its 'factor'.")
    if kind == "llama3":
        if scaling.get("original_max_position_embeddings") is not None:
            check_value(
                file,
                "rope_scaling.original_max_position_embeddings",
                scaling["original_max_position_embeddings"],
                *LIMITS["max_position_embeddings"],
            )
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        if not high > low:
            raise ModelError(f"{file}: rope_scaling's high_freq_factor ({high}) must be above low_freq_factor ({low}).")
    if kind in ("longrope", "su"):
        original = config.original_max_position_embeddings or config.max_position_embeddings
        if original < 2:
            raise _bad(file, "original_max_position_embeddings", original, "at least 2 for longrope")
        long = scaling.get("long_factor")
        if long is not None:
            pairs = config.rotary_dims // 2
            if not isinstance(long, list) or len(long) != pairs:
                raise _bad(file, "rope_scaling.long_factor", long, f"a list of {pairs} numbers, one per rotated pair")
            for value in long:
                check_value(file, "rope_scaling.long_factor", value, 0.0, 1e6)


# --- the config against the tensors in the file -------------------------------------------------

# Projection (HF name after "model.layers.<i>.") -> its rows, from the config.
_ROWS: dict[str, Callable[[ModelConfig], int]] = {
    "self_attn.q_proj": lambda c: c.num_attention_heads * c.head_dim,
    "self_attn.k_proj": lambda c: c.kv_dim,
    "self_attn.v_proj": lambda c: c.kv_dim,
    "self_attn.o_proj": lambda c: c.hidden_size,
    "self_attn.qkv_proj": lambda c: c.num_attention_heads * c.head_dim + 2 * c.kv_dim,
    "mlp.gate_proj": lambda c: c.intermediate_size,
    "mlp.up_proj": lambda c: c.intermediate_size,
    "mlp.gate_up_proj": lambda c: 2 * c.intermediate_size,
    "mlp.down_proj": lambda c: c.hidden_size,
    "input_layernorm": lambda c: c.hidden_size,
    "post_attention_layernorm": lambda c: c.hidden_size,
}


def check_weights(config: ModelConfig, shapes: dict[str, tuple[int, ...]], file: str, name: Naming) -> None:
    """The config describes the tensors the file holds: its layer count, vocabulary and widths."""
    layers = set()
    for key in shapes:
        if key.startswith("model.layers."):
            index = key.split(".")[2]
            if index.isdigit():
                layers.add(int(index))
    n = config.num_hidden_layers
    if layers != set(range(n)):
        held = f"layers 0 to {max(layers)} ({len(layers)})" if layers else "no layers"
        raise ModelError(
            f"{file}: '{name('num_hidden_layers')}' is {n}, but the weights hold {held}: "
            "the config does not belong to these weights."
        )
    _expect_rows(shapes, "model.embed_tokens.weight", config.vocab_size, file, name("vocab_size"))
    _expect_rows(shapes, "lm_head.weight", config.vocab_size, file, name("vocab_size"))
    _expect_rows(shapes, "model.norm.weight", config.hidden_size, file, name("hidden_size"))
    for i in range(n):
        for part, rows in _ROWS.items():
            _expect_rows(shapes, f"model.layers.{i}.{part}.weight", rows(config), file, part)


def _expect_rows(shapes: dict, key: str, rows: int, file: str, field: str) -> None:
    shape = shapes.get(key)
    if shape is not None and (len(shape) == 0 or shape[0] != rows):
        raise ModelError(
            f"{file}: tensor '{key}' has shape {tuple(shape)}, but the config ('{field}') makes it {rows} rows: "
            "the config does not belong to these weights."
        )


QUANTIZED_BITS = (2, 3, 4, 5, 6, 8)  # the widths mx.dequantize reads


def check_quantized(shapes: dict[str, tuple[int, ...]], kinds: dict[str, str], group_size: int, where: str) -> None:
    """Each quantized triple (packed weight, scales, biases) has shapes that give a width MLX reads, and
    `kinds` ("uint32", "float" or "other" per tensor) that MLX's quantized products take: the loader
    divides by the scales' width and indexes the biases (a zero-width scale was a bare
    ZeroDivisionError, a stray one a KeyError), and MLX refuses a packed weight that is not uint32."""
    for key, scales in shapes.items():
        if not key.endswith(".scales"):
            continue
        stem = key[: -len(".scales")]
        weight, biases = shapes.get(f"{stem}.weight"), shapes.get(f"{stem}.biases")
        typed = kinds.get(f"{stem}.weight") == "uint32" and kinds[key] == kinds.get(f"{stem}.biases") == "float"
        usable = typed and biases == scales and weight is not None and len(weight) >= 2 and weight[:-1] == scales[:-1]
        per_group = scales[-1] * group_size if usable else 0
        if not per_group or weight[-1] * 32 % per_group or weight[-1] * 32 // per_group not in QUANTIZED_BITS:
            raise ModelError(
                f"{where}: the quantized tensor '{stem}' has weight {weight} ({kinds.get(f'{stem}.weight')}), "
                f"scales {scales} ({kinds[key]}), biases {biases} ({kinds.get(f'{stem}.biases')}), which no "
                f"{'/'.join(map(str, QUANTIZED_BITS))}-bit layout in groups of {group_size} gives (uint32 weights, "
                "float scales and biases): the weights are broken."
            )


def check_vocabulary(tokens: int, rows: int, file: str) -> None:
    """A token the embedding has no row for would index past it (MLX does not check)."""
    if tokens > rows:
        raise ModelError(
            f"{file}: the tokenizer has {tokens} tokens, but the embedding has {rows} rows: "
            "the tokenizer does not belong to these weights."
        )


def field_namer(file_kind: str, arch: Optional[str] = None) -> Naming:
    """How a field is spelt in a config.json ("hf") or in a GGUF of architecture `arch`."""
    if file_kind == "gguf":
        return lambda field: f"{arch}.{GGUF_KEYS.get(field, field)}"
    return lambda field: HF_KEYS.get(field, field)
