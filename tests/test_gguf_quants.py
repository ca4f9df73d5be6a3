"""GGUF quantization types read as llama.cpp's own Python package (`gguf`) decodes them.

The `gguf` package can quantize Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 but not the K-quants,
so K-quant tensors are written as random blocks (with sane float16 scales) and compared
with `gguf.quants.dequantize`, llama.cpp's reference decoder; MLX's own GGUF reader, which
dequantizes Q2_K, Q4_K and Q6_K, is a second reference, and on the default model it is the
reference for everything our reader does.
"""

from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, glasschat
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as reference

from model.loading import gguf_file
from model.loading.loader import _read_gguf, load_model

# Byte offsets of each block's float16 fields (ggml's block structs): random bytes there could be inf or NaN.
HALF_FIELDS = {
    "Q4_0": [0],
    "Q4_1": [0, 2],
    "Q5_0": [0],
    "Q5_1": [0, 2],
    "Q8_0": [0],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q2_K": [80, 82],
    "Q3_K": [108],
    "Q6_K": [208],
}
KEPT_QUANTIZED = {"Q4_0": 4, "Q4_1": 4, "Q5_0": 5, "Q5_1": 5, "Q8_0": 8, "Q4_K": 4, "Q5_K": 5}


def random_blocks(kind: str, rows: int, cols: int, rng, scale=(1e-3, 1e-1)) -> np.ndarray:
    per_block, size = gguf.GGML_QUANT_SIZES[T[kind]]
    raw = rng.integers(0, 256, size=(rows * cols // per_block, size), dtype=np.uint8)
    for at in HALF_FIELDS[kind]:
        halves = rng.uniform(*scale, size=raw.shape[0]).astype(np.float16)
        raw[:, at : at + 2] = halves.view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, -1)


def write(path: Path, tensors: dict, meta=lambda w: None) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    meta(writer)
    for name, (array, kind) in tensors.items():
        writer.add_tensor(name, array, raw_dtype=T[kind] if kind else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def as_float(tensors: dict, name: str, bits: int = 0) -> np.ndarray:
    """A loaded tensor as float32, expanding MLX's quantized form."""
    stem = name.removesuffix(".weight")
    if f"{stem}.scales" not in tensors:
        return np.array(tensors[name].astype(mx.float32))
    scales, biases = (tensors[f"{stem}.{k}"].astype(mx.float32) for k in ("scales", "biases"))
    return np.array(mx.dequantize(tensors[name], scales, biases, group_size=32, bits=bits))


def test_every_type_reads_as_llama_cpps_decoder(tmp_path):
    rng = np.random.default_rng(0)
    raws = {kind: random_blocks(kind, 4, 512, rng) for kind in HALF_FIELDS}
    plain = rng.normal(size=(3, 64)).astype(np.float32)
    tensors = {f"{kind}.weight": (raw, kind) for kind, raw in raws.items()}
    tensors |= {"f32.weight": (plain, None), "f16.weight": (plain.astype(np.float16), None)}
    loaded, _ = _read_gguf(write(tmp_path / "types.gguf", tensors))
    for kind, raw in raws.items():
        ref = reference(raw, T[kind])
        bits = KEPT_QUANTIZED.get(kind, 0)
        if bits:  # kept quantized: packed `bits`-bit weights and a scale and bias per 32
            assert loaded[f"{kind}.weight"].dtype == mx.uint32, kind
            assert loaded[f"{kind}.weight"].shape == (4, 512 * bits // 32), kind
        else:
            assert loaded[f"{kind}.weight"].dtype == mx.float16, kind
        ours = as_float(loaded, f"{kind}.weight", bits)
        if kind.endswith("_K") and bits:
            # A K-quant's scale (d times a 6-bit factor) is rounded once to float16.
            np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3 * np.abs(ref).max(), err_msg=kind)
        elif bits:
            np.testing.assert_array_equal(ours, ref, err_msg=kind)  # scales are float16 already: exact
        else:
            np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=1e-6, err_msg=kind)  # held as float16
    np.testing.assert_array_equal(np.array(loaded["f32.weight"]), plain)


def test_a_large_tensor_reads_the_same_across_row_chunks(tmp_path):
    """Tensors are converted a million weights at a time: 4100 rows of 256 is two chunks."""
    rng = np.random.default_rng(3)
    raws = {kind: random_blocks(kind, 4100, 256, rng) for kind in ("Q4_K", "Q6_K")}
    loaded, _ = _read_gguf(write(tmp_path / "big.gguf", {f"{k}.weight": (raw, k) for k, raw in raws.items()}))
    for kind, raw in raws.items():
        ref = reference(raw, T[kind])
        ours = as_float(loaded, f"{kind}.weight", KEPT_QUANTIZED.get(kind, 0))
        np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=1e-3 * np.abs(ref).max(), err_msg=kind)


def test_mlx_reads_q2_k_and_q6_k_the_same_way(tmp_path):
    """mx.load dequantizes Q2_K, Q4_K and Q6_K itself and refuses Q3_K and Q5_K. Its Q4_K is wrong
    (gguf-tools' decoder scales each high-nibble group with the previous group's scale), which is
    one more reason a file with Q4_K never goes through it."""
    rng = np.random.default_rng(1)
    raws = {kind: random_blocks(kind, 2, 1024, rng) for kind in ("Q2_K", "Q6_K")}
    path = write(tmp_path / "k.gguf", {f"{k}.weight": (raw, k) for k, raw in raws.items()})
    theirs = mx.load(str(path))
    ours = gguf_file.load(path, gguf_file.read_header(path))[0]
    for kind in raws:
        np.testing.assert_allclose(as_float(ours, f"{kind}.weight"), np.array(theirs[f"{kind}.weight"]), rtol=2e-3)


def test_default_model_reads_exactly_as_mx_load_reads_it(default_gguf_path):
    """Q4_1, Q8_0 and F32 through our reader: the same arrays and metadata as MLX's own reader."""
    theirs, their_meta = mx.load(str(default_gguf_path), return_metadata=True)
    ours, our_meta = gguf_file.load(default_gguf_path, gguf_file.read_header(default_gguf_path))
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert ours[name].dtype == value.dtype and ours[name].shape == value.shape, name
        assert mx.array_equal(ours[name], value).item(), name
    assert our_meta.keys() == their_meta.keys()
    for key, value in their_meta.items():
        if isinstance(value, mx.array):
            assert our_meta[key].dtype == value.dtype and mx.array_equal(our_meta[key], value).item(), key
        else:
            assert our_meta[key] == value, key


def test_an_unreadable_type_is_one_line_naming_it(tmp_path):
    raw = np.zeros((2, 256 // 32 * 18), dtype=np.uint8)  # IQ4_NL: 32 weights in 18 bytes
    path = write(tmp_path / "iq.gguf", {"token_embd.weight": (raw, "IQ4_NL")})
    assert_one_line_error(glasschat("run", "hi", "--model", str(path)), "IQ4_NL", "token_embd.weight")


# A tiny Llama whose matrices use every K-quant: 256 wide, so rows are whole super-blocks.
D, F, LAYERS, HEADS, KV_HEADS = 256, 512, 2, 4, 2
MATRICES = {  # GGUF name -> (rows, cols, type); a Q4_K_M file mixes types much like this
    "token_embd.weight": (256, D, "Q4_K"),
    "output.weight": (256, D, "Q6_K"),
    **{
        f"blk.{i}.{name}": shape
        for i in range(LAYERS)
        for name, shape in {
            "attn_q.weight": (D, D, "Q4_K"),
            "attn_k.weight": (D // 2, D, "Q5_K"),
            "attn_v.weight": (D // 2, D, "Q6_K"),
            "attn_output.weight": (D, D, "Q3_K"),
            "ffn_gate.weight": (F, D, "Q4_K"),
            "ffn_up.weight": (F, D, "Q2_K"),
            "ffn_down.weight": (D, F, "Q5_K"),
        }.items()
    },
}


def tiny_llama_meta(writer):
    for key, value in {
        "block_count": LAYERS,
        "embedding_length": D,
        "feed_forward_length": F,
        "attention.head_count": HEADS,
        "attention.head_count_kv": KV_HEADS,
        "context_length": 256,
        "rope.dimension_count": D // HEADS,
    }.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_float32("llama.rope.freq_base", 10000.0)
    byte_chars = [chr(c) for c in range(0x100, 0x200)]  # 256 distinct single-character tokens
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(byte_chars)
    writer.add_token_types([1] * 256)
    writer.add_token_merges([])


@pytest.fixture(scope="module")
def tiny_k_model(tmp_path_factory):
    """The K-quant file, and the same weights as float32 decoded by llama.cpp's reference."""
    rng = np.random.default_rng(2)
    folder = tmp_path_factory.mktemp("kquants")
    quantized, floats = {}, {}
    for name, (rows, cols, kind) in MATRICES.items():
        raw = random_blocks(kind, rows, cols, rng, scale=(2e-4, 2e-3))
        quantized[name] = (raw, kind)
        floats[name] = (reference(raw, T[kind]).astype(np.float32), None)
    for name in ["output_norm.weight"] + [
        f"blk.{i}.{n}" for i in range(LAYERS) for n in ("attn_norm.weight", "ffn_norm.weight")
    ]:
        norm = (1 + 0.1 * rng.normal(size=D)).astype(np.float32)
        quantized[name] = floats[name] = (norm, None)
    return (
        write(folder / "tiny-k.gguf", quantized, tiny_llama_meta),
        write(folder / "tiny-f32.gguf", floats, tiny_llama_meta),
    )


@pytest.mark.parametrize("layout", ["float32", "quantized"])
def test_tiny_k_quant_model_gives_the_reference_logits(tiny_k_model, layout):
    k_path, f32_path = tiny_k_model
    ids = mx.array([[3, 141, 59, 26, 5, 35, 89, 79, 32, 38]])
    expected = load_model(str(f32_path), layout="float32").model(ids)
    model = load_model(str(k_path), layout=layout)
    got = model.model(ids).astype(mx.float32)
    scale = mx.abs(expected).max().item()
    assert mx.abs(got - expected).max().item() < 1e-2 * scale  # measured 5e-3: float16 scales and weights
    info = model.info()
    assert "Q4_K x" in info["file_types"] and "Q6_K x" in info["file_types"] and "(as float16)" in info["file_types"]
    if layout == "quantized":
        layer = model.model.model.layers[0]
        assert layer.self_attn.o_proj.weight.dtype == mx.float16  # Q3_K: group 16, dequantized
        assert "Q5_K x" in info["file_types"] and "(as q5)" in info["file_types"]
