"""The bench's scaling section: the 1B shape is Llama 3.2 1B's, and the random model built from a shape has it."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from bench.scaling import LLAMA_1B, print_report, random_llama
from model.network.config import ModelConfig
from model.network.transformer import Transformer, parameter_count

TINY = dict(  # the 1B shape's ratios (4 query heads per KV head, MLP 4x wide, tied), small
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=32,
    intermediate_size=512,
    vocab_size=300,
    tie_word_embeddings=True,
)


def test_the_1b_shape_has_llama_3_2_1b_parameter_count():
    # Meta's model card: 1.23B; the checkpoint holds 1,235,814,400 parameters (tied embeddings).
    assert parameter_count(Transformer(ModelConfig("llama", **LLAMA_1B))) == 1_235_814_400


def test_random_model_has_the_shape_quantized_and_random():
    model, weight_bytes = random_llama(TINY, bits=4, group_size=32)
    assert weight_bytes == sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    matrices = [m for _, m in model.named_modules() if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))]
    assert not [m for _, m in model.named_modules() if type(m) in (nn.Linear, nn.Embedding)]
    assert all(m.bits == 4 and m.group_size == 32 for m in matrices)
    dense = [np.array(mx.dequantize(m.weight, m.scales, m.biases, group_size=32, bits=4)) for m in matrices]
    norms = 2 * TINY["num_hidden_layers"] * TINY["hidden_size"] + TINY["hidden_size"]
    assert sum(w.size for w in dense) + norms == parameter_count(model)
    values = np.concatenate([w.ravel() for w in dense])
    assert abs(values.std() - 0.02) < 0.002 and abs(values.mean()) < 0.001  # N(0, 0.02), through 4-bit rounding
    logits = model(mx.array([[1, 2, 3]]))
    assert logits.shape == (1, 3, TINY["vocab_size"]) and bool(mx.isfinite(logits).all())


def test_report_prints_both_sections(capsys):
    mb = 2**20
    memory = {"layout": "quantized", "file_bytes": 98 * mb, "weight_bytes": 115 * mb, "cache_bytes": 24 * mb}
    memory |= {"rss_imports": 120 * mb, "rss_loaded": 250 * mb, "rss_prefilled": 500 * mb}
    scaled = {"matvec": "SIMD kernel", "weight_bytes": 900 * mb, "build_s": 30, "prefill_tokens": 512}
    scaled |= {"prefill_tok_s": 20.0, "decode_tok_s": 11.0, "lookup_tok_s": 10.0, "verify_8_over_1": 3.2}
    scaled |= {"lookup_counts": {"drafted": 0, "accepted": 0, "passes": 0}, "cache_bytes": mb}
    scaled |= {"rss_imports": 120 * mb, "rss_built": 1100 * mb, "rss_prefilled": 1200 * mb}
    print_report({"memory": [memory, {"error": "exit 1: boom"}], "llama_1b_shape": scaled})
    out = capsys.readouterr().out
    assert "378  over the 300 MB target" in out  # 500 - 98 - 24
    assert "not measured: exit 1: boom" in out
    assert "verify pass of 8 rows: 3.20x" in out and "overhead 299" in out


def test_random_gguf_has_the_shape_and_the_default_vocabulary(tmp_path):
    """llama.cpp's copy of the 1B shape: our GGUF reader finds the shape, Q4_1 weights of N(0, 0.02), the vocabulary."""
    from bench.random_gguf import write_random_llama
    from model.loading.default_model import default_model_path
    from model.loading.loader import load_model

    shape = {**TINY, "vocab_size": 49200, "rope_theta": 500000.0, "max_position_embeddings": 4096}  # 48 pad tokens
    lm = load_model(str(write_random_llama(tmp_path / "r.gguf", shape, default_model_path())), layout="quantized")
    c = lm.config
    got = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim)
    assert got == (128, 2, 4, 1, 32) and (c.intermediate_size, c.vocab_size) == (512, 49200)
    assert lm.file_types.startswith("Q4_1") and c.tie_word_embeddings
    default = load_model(None, layout="quantized").tokenizer
    assert lm.tokenizer.encode_text("Hello, world!") == default.encode_text("Hello, world!")
    down = lm.model.model.layers[0].mlp.down_proj
    values = np.array(mx.dequantize(down.weight, down.scales, down.biases, group_size=32, bits=4))
    assert abs(values.std() - 0.02) < 0.002
