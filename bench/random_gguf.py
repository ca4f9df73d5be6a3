"""A random-weight Llama of any shape as a Q4_1 GGUF, so llama.cpp can run the bench's 1B shape.

The weights are random (N(0, 0.02), as `bench.scaling.random_llama` draws ours, though
not the same numbers): only the speed is compared. The vocabulary is the default
model's (its tokens, merges and special ids), padded with control tokens up to the
shape's size, so the bench's prompts tokenize the same for both engines. Q4_1 is the
default model's own type: 4-bit codes with a scale and a minimum per 32 weights,
MLX's affine layout at group size 32.
"""

from pathlib import Path

import numpy as np

CONTROL = 3  # llama.cpp's token type for tokens that text never produces


def _tokenizer(reader) -> dict:
    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    def scalar(key):
        field = reader.fields[key]
        return field.parts[field.data[0]].tolist()[0]

    return {
        "pre": strings("tokenizer.ggml.pre")[0],
        "tokens": strings("tokenizer.ggml.tokens"),
        "types": [
            int(reader.fields["tokenizer.ggml.token_type"].parts[i][0])
            for i in reader.fields["tokenizer.ggml.token_type"].data
        ],
        "merges": strings("tokenizer.ggml.merges"),
        "bos": scalar("tokenizer.ggml.bos_token_id"),
        "eos": scalar("tokenizer.ggml.eos_token_id"),
    }


def write_random_llama(path: Path, shape: dict, vocab_from: Path, seed: int = 0) -> Path:
    """Write a Llama of `shape` (bench.scaling.LLAMA_1B's keys) with random Q4_1 weights to `path`."""
    import gguf
    from gguf.quants import quantize

    Q4_1 = gguf.GGMLQuantizationType.Q4_1
    tok = _tokenizer(gguf.GGUFReader(str(vocab_from)))
    pad = shape["vocab_size"] - len(tok["tokens"])
    d, f, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    q_dim = shape["num_attention_heads"] * shape["head_dim"]
    kv_dim = shape["num_key_value_heads"] * shape["head_dim"]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(shape["max_position_embeddings"])
    w.add_embedding_length(d)
    w.add_feed_forward_length(f)
    w.add_head_count(shape["num_attention_heads"])
    w.add_head_count_kv(shape["num_key_value_heads"])
    w.add_rope_dimension_count(shape["head_dim"])
    w.add_rope_freq_base(shape["rope_theta"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(shape["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tok["tokens"] + [f"<|random_pad_{i}|>" for i in range(pad)])
    w.add_token_types(tok["types"] + [CONTROL] * pad)
    w.add_token_merges(tok["merges"])
    w.add_bos_token_id(tok["bos"])
    w.add_eos_token_id(tok["eos"])

    rng = np.random.default_rng(seed)

    def matrix(name: str, rows: int, cols: int) -> None:
        values = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02)
        w.add_tensor(name, quantize(values, Q4_1), raw_dtype=Q4_1)

    def ones(name: str) -> None:
        w.add_tensor(name, np.ones(d, dtype=np.float32))

    matrix("token_embd.weight", shape["vocab_size"], d)  # tied: also the output head
    ones("output_norm.weight")
    for i in range(layers):
        ones(f"blk.{i}.attn_norm.weight")
        ones(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", q_dim, d)
        matrix(f"blk.{i}.attn_k.weight", kv_dim, d)
        matrix(f"blk.{i}.attn_v.weight", kv_dim, d)
        matrix(f"blk.{i}.attn_output.weight", d, q_dim)
        matrix(f"blk.{i}.ffn_gate.weight", f, d)
        matrix(f"blk.{i}.ffn_up.weight", f, d)
        matrix(f"blk.{i}.ffn_down.weight", d, f)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
