"""Write the default GGUF's own tensors as a Hugging Face / MLX folder (for loader tests)."""

import json
from pathlib import Path

import mlx.core as mx

from model.loading.config import config_from_gguf
from model.loading.loader import _read_gguf
from model.loading.tokenizer import tokenizer_from_gguf
from model.loading.weights import dequantize, quantized_modules, rename_gguf


def unpermute_rows(w: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's q/k row interleave so the folder uses the non-traditional RoPE, like HF."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def export_folder(gguf_path: Path, folder: Path, dtype=None) -> Path:
    """MLX 4-bit folder when `dtype` is None, else a dequantized folder in that dtype."""
    tensors, meta = _read_gguf(gguf_path)
    weights = rename_gguf(tensors, config_from_gguf(meta, set(tensors)))
    heads = int(meta["llama.attention.head_count"].item())
    kv_heads = int(meta["llama.attention.head_count_kv"].item())
    for name in list(weights):
        if ".q_proj." in name:
            weights[name] = unpermute_rows(weights[name], heads)
        elif ".k_proj." in name:
            weights[name] = unpermute_rows(weights[name], kv_heads)
    config = {
        "model_type": "llama",
        "hidden_size": int(meta["llama.embedding_length"].item()),
        "num_hidden_layers": int(meta["llama.block_count"].item()),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": int(meta["llama.feed_forward_length"].item()),
        "vocab_size": int(meta["llama.vocab_size"].item()),
        "rms_norm_eps": float(meta["llama.attention.layer_norm_rms_epsilon"].item()),
        "rope_theta": float(meta["llama.rope.freq_base"].item()),
        "max_position_embeddings": int(meta["llama.context_length"].item()),
        "tie_word_embeddings": True,
    }
    groups = quantized_modules(weights, 32)
    if dtype is None:
        config["quantization"] = {"group_size": 32, "bits": 4, "model.embed_tokens": {"group_size": 32, "bits": 8}}
    else:
        weights = dequantize(weights, groups, dtype)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    tokenizer = tokenizer_from_gguf(meta)
    tokenizer.markup.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": meta["tokenizer.chat_template"],
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
            }
        )
    )
    return folder
