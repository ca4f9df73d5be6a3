"""Each class of broken or hostile model file, refused with the reason before any C code or allocation sees it:
GGUF headers (llama.cpp's own rules), safetensors headers (the safetensors library's), config.json values
and their agreement with the weights, tokenizer files and GGUF vocabularies. See tests/README.md."""

import json
import shutil
import struct

import mlx.core as mx
import numpy as np
import pytest
from hostile_files import ARRAY, F32, GGML, STRING, U32, U64, gguf_string, quantize_folder, write_gguf
from tiny_models import BASE_CONFIG, VARIANTS, write_chat_folder

from model.errors import ModelError
from model.loading import config_checks, gguf_checks, gguf_header, safetensors_checks, tokenizer_checks
from model.loading.loader import load_model

# --- GGUF -------------------------------------------------------------------------------------------------

ARCH = [("general.architecture", STRING, "llama")]
ONE = [("a.weight", [32], GGML["F32"], 0)]  # one float32 row of 32


def gguf(tmp_path, metadata=ARCH, tensors=ONE, data=b"\0" * 128, **kw):
    return write_gguf(tmp_path / "x.gguf", metadata, tensors, data, **kw)


def refused(path, *phrases):
    with pytest.raises(gguf_checks.BadGGUF) as err:
        gguf_header.read_header(path)
    for phrase in phrases:
        assert phrase in str(err.value), str(err.value)


def test_a_well_formed_file_reads(tmp_path):
    meta, infos, start = gguf_header.read_header(gguf(tmp_path))
    assert meta["general.architecture"] == "llama" and infos[0].shape == (32,) and start % 32 == 0


@pytest.mark.parametrize(
    "version, phrase",
    [
        (1, "is GGUF version 1; "),
        (4, "is GGUF version 4; "),
        (0x03000000, "big-endian GGUF (version 3)"),
        (2**32 - 1, "version"),
    ],
)
def test_unknown_versions(tmp_path, version, phrase):
    refused(gguf(tmp_path, version=version), phrase, "glasschat reads")


@pytest.mark.parametrize("alignment", [0, 3, 48, 1 << 30])
def test_alignment_not_a_power_of_two_or_absurd(tmp_path, alignment):
    meta = ARCH + [("general.alignment", U32, alignment)]
    refused(gguf(tmp_path, meta), f"general.alignment {alignment}", "power of two")


def test_alignment_of_the_wrong_type(tmp_path):
    refused(gguf(tmp_path, ARCH + [("general.alignment", STRING, "32")]), "general.alignment '32', not a number")


def test_tensor_bytes_must_match_type_and_shape(tmp_path):
    refused(gguf(tmp_path, tensors=[("q.weight", [40], GGML["Q8_0"], 0)]), "rows of 40 values, not whole Q8_0 blocks")
    big = [("a.weight", [32, 1000], GGML["F32"], 0)]  # 128,000 bytes in a 128-byte data section
    refused(gguf(tmp_path, tensors=big), "truncated or corrupt", "needs 128,000 bytes")


def test_a_tensor_must_start_where_the_one_before_ends(tmp_path):
    gap = ONE + [("b.weight", [32], GGML["F32"], 256)]
    refused(gguf(tmp_path, tensors=gap, data=b"\0" * 512), "puts tensor 'b.weight' at byte 256", "ends at 128")
    overlap = ONE + [("b.weight", [32], GGML["F32"], 0)]
    refused(gguf(tmp_path, tensors=overlap, data=b"\0" * 512), "puts tensor 'b.weight' at byte 0")


def test_duplicates(tmp_path):
    refused(gguf(tmp_path, ARCH + ARCH), "holds the metadata key 'general.architecture' twice")
    twice = ONE + [("a.weight", [32], GGML["F32"], 128)]
    refused(gguf(tmp_path, tensors=twice, data=b"\0" * 512), "two tensors named 'a.weight'")


@pytest.mark.parametrize("count", [2**31, 2**63, 2**64 - 1])
def test_counts_the_file_cannot_hold_cost_nothing(tmp_path, count):
    path = gguf(tmp_path)
    data = bytearray(path.read_bytes())
    for at, what in ((8, "tensors"), (16, "metadata entries")):
        cut = bytearray(data)
        cut[at : at + 8] = struct.pack("<Q", count)
        path.write_bytes(bytes(cut))
        refused(path, f"claims {count:,} {what}")


def test_a_metadata_array_longer_than_the_file(tmp_path):
    path = gguf(tmp_path, ARCH + [("tokenizer.ggml.tokens", ARRAY, (STRING, ["a", "b"]))])
    data = path.read_bytes()
    at = data.index(b"tokenizer.ggml.tokens") + len("tokenizer.ggml.tokens") + 4 + 4  # key, value type, item type
    patched = data[:at] + struct.pack("<Q", 2**62) + data[at + 8 :]
    path.write_bytes(patched)
    refused(path, f"claims {2**62:,} array items")
    for keys in (None, ()):  # read, or skipped as the loader and the Models screen skip the vocabulary
        with pytest.raises(gguf_checks.BadGGUF):
            gguf_header.read_header(path, keys=keys)


def test_nested_arrays_and_unknown_types(tmp_path):
    refused(gguf(tmp_path, ARCH + [("x", ARRAY, (ARRAY, []))]), "array of type 9")
    refused(gguf(tmp_path, ARCH + [("x", 99, b"")]), "metadata value of type 99")
    refused(gguf(tmp_path, tensors=[("a.weight", [32], 99, 0)]), "as type 99")


def test_tensor_dimensions(tmp_path):
    refused(gguf(tmp_path, tensors=[("a.weight", [1, 1, 1, 1, 32], 0, 0)]), "5 dimensions")
    refused(gguf(tmp_path, tensors=[("a.weight", [32, 0], 0, 0)]), "the dimensions [32, 0]")
    refused(gguf(tmp_path, tensors=[("a" * 65, [32], 0, 0)]), "65 bytes long")


def test_a_key_longer_than_gguf_allows(tmp_path):
    path = gguf(tmp_path)
    data = path.read_bytes()
    at = data.index(gguf_string("general.architecture"))
    path.write_bytes(data[:at] + struct.pack("<Q", 2**40) + data[at + 8 :])
    refused(path, "metadata key 1099511627776 bytes long")


def test_the_loader_names_the_file_and_the_reason(tmp_path):
    with pytest.raises(ModelError, match=r"^'x.gguf' holds two tensors named 'a.weight'; re-download it.$"):
        load_model(str(gguf(tmp_path, tensors=ONE * 2, data=b"\0" * 512)))


# --- GGUF metadata the network reads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, phrase",
    [
        ("llama.block_count", np.uint32(0), "'llama.block_count' is 0"),
        ("llama.block_count", np.uint64(2**63), "'llama.block_count' is 9223372036854775808"),
        ("llama.attention.head_count", np.int32(-1), "'llama.attention.head_count' is -1"),
        ("llama.embedding_length", np.array([64, 64], np.uint32), "an array of 2 values"),
        ("llama.context_length", "4096", "'llama.context_length' is '4096'"),
        ("llama.attention.layer_norm_rms_epsilon", np.float32("nan"), "rms_epsilon' is nan"),
    ],
)
def test_gguf_shape_values(key, value, phrase):
    meta = {"general.architecture": "llama", key: mx.array(value) if isinstance(value, np.ndarray) else value}
    with pytest.raises(ModelError, match="must be") as err:
        config_checks.check_gguf_values(meta, "m.gguf")
    assert str(err.value).startswith("m.gguf: ") and phrase in str(err.value)


# --- safetensors ------------------------------------------------------------------------------------------


def safetensors(tmp_path, header, data=b"\0" * 16, length=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


A = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}


@pytest.mark.parametrize(
    "header, data, length, phrase",
    [
        ({"a": A}, b"\0" * 16, 2**63, "claims a header of 9,223,372,036,854,775,808 bytes"),
        (b"{not json", b"", None, "not JSON"),
        (b"[1, 2]", b"", None, "not a JSON object"),
        (b'{"a": ' + json.dumps(A).encode() + b', "a": ' + json.dumps(A).encode() + b"}", b"\0" * 16, None, "twice"),
        ({"a": {**A, "dtype": "F8_E4M3"}}, b"\0" * 16, None, "a dtype glasschat cannot read"),
        ({"a": {**A, "dtype": [-1, 4]}}, b"\0" * 16, None, "a dtype glasschat cannot read"),  # was a TypeError
        ({"a": {**A, "shape": [-4]}}, b"\0" * 16, None, "the shape [-4]"),
        ({"a": {**A, "shape": [2**31, 2**31]}}, b"\0" * 16, None, "gives tensor 'a' 16 bytes, where F32"),
        ({"a": {**A, "data_offsets": [0, 2**63]}}, b"\0" * 16, None, "the offsets"),
        (
            {"a": A, "b": {**A, "data_offsets": [8, 24]}},
            b"\0" * 32,
            None,
            "at byte 8 of the data; the one before ends at 16",
        ),
        ({"a": A, "b": {**A, "data_offsets": [20, 36]}}, b"\0" * 36, None, "at byte 20"),
        ({"a": A}, b"\0" * 8, None, "has 8 bytes of data where its tensors take 16"),
        ({"a": A}, b"\0" * 24, None, "has 24 bytes of data where its tensors take 16"),
        ({"a": A, "__metadata__": {"x": 1}}, b"\0" * 16, None, "__metadata__"),
        ({"a": "F32"}, b"\0" * 16, None, "not an object"),
    ],
)
def test_safetensors_headers(tmp_path, header, data, length, phrase):
    with pytest.raises(safetensors_checks.BadSafetensors) as err:
        safetensors_checks.read_header(safetensors(tmp_path, header, data, length))
    assert phrase in str(err.value)


def test_a_real_safetensors_file_reads(tmp_path):
    path = tmp_path / "w.safetensors"
    mx.save_safetensors(str(path), {"a": mx.zeros((3, 5)), "b": mx.zeros((7,), dtype=mx.bfloat16)})
    assert safetensors_checks.read_header(path) == {"a": ("F32", (3, 5)), "b": ("BF16", (7,))}


# --- config.json, and the config against the weights --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    write_chat_folder(folder)
    return folder


def config_with(**changes):
    cfg = {**BASE_CONFIG, **VARIANTS["llama_tied"], **changes}
    return {k: v for k, v in cfg.items() if v is not DELETE}


DELETE = object()


@pytest.mark.parametrize(
    "changes, phrase",
    [
        ({"num_attention_heads": 0}, "'num_attention_heads' is 0; it must be a whole number from 1 to 1024"),
        ({"num_hidden_layers": 2**31}, "'num_hidden_layers' is 2147483648"),
        ({"num_hidden_layers": 2**63}, "'num_hidden_layers' is 9223372036854775808"),
        ({"hidden_size": -1}, "'hidden_size' is -1"),
        ({"hidden_size": "64"}, "'hidden_size' is '64'"),
        ({"hidden_size": True}, "'hidden_size' is True"),
        ({"hidden_size": 64.5}, "'hidden_size' is 64.5"),
        ({"hidden_size": DELETE}, "lacks 'hidden_size'"),
        ({"num_hidden_layers": None}, "'num_hidden_layers' is None; it must be a whole number"),  # was a TypeError
        ({"rms_norm_eps": None}, "'rms_norm_eps' is None"),
        ({"vocab_size": 0}, "'vocab_size' is 0"),
        ({"max_position_embeddings": -1}, "'max_position_embeddings' is -1"),
        ({"max_position_embeddings": 1}, "'max_position_embeddings' is 1; it must be a whole number from 64"),
        ({"rms_norm_eps": 0}, "'rms_norm_eps' is 0; it must be a number above 0"),
        ({"rms_norm_eps": float("inf")}, "'rms_norm_eps' is inf"),
        ({"rope_theta": -1.0}, "'rope_theta' is -1"),
        ({"num_key_value_heads": 3}, "'num_key_value_heads' is 3, which does not divide 'num_attention_heads' (4)"),
        ({"head_dim": 15}, "RoPE would turn 15 features"),
        ({"head_dim": 1024, "num_attention_heads": 64}, "make 65536 features against a hidden size of 64"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 0}}, "'rope_scaling.factor' is 0"),
        (
            {"rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4}},
            "high_freq_factor (4.0) must be above",
        ),
        ({"rope_scaling": [1, 2]}, "'rope_scaling' is [1, 2]"),
        ({"model_type": "gemma2", "sliding_window_pattern": 0}, "'sliding_window_pattern' is 0"),
        ({"model_type": "gemma3_text", "layer_types": ["sliding_attention"]}, "a list of 2 entries, one per layer"),
    ],
)
def test_config_values(changes, phrase):
    with pytest.raises(ModelError) as err:
        config_checks.hf_config(config_with(**changes))
    assert "\n" not in str(err.value) and str(err.value).startswith("config.json")
    assert phrase in str(err.value), str(err.value)


def test_a_config_that_is_not_an_object():
    with pytest.raises(ModelError, match="config.json is not a JSON object"):
        config_checks.hf_config([1, 2, 3])


def rewritten(folder, tmp_path, file, content):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / file).write_text(content if isinstance(content, str) else json.dumps(content))
    return copy


@pytest.mark.parametrize(
    "changes, phrase",
    [
        ({"num_hidden_layers": 3}, "'num_hidden_layers' is 3, but the weights hold layers 0 to 1 (2)"),
        ({"num_hidden_layers": 1}, "'num_hidden_layers' is 1, but the weights hold layers 0 to 1 (2)"),
        ({"vocab_size": 500}, "has shape (346, 64), but the config ('vocab_size') makes it 500 rows"),
        ({"intermediate_size": 256}, "('mlp.gate_proj') makes it 256 rows"),
        ({"num_key_value_heads": 4}, "('self_attn.k_proj') makes it 64 rows"),
    ],
)
def test_a_config_that_does_not_belong_to_the_weights(tiny_folder, tmp_path, changes, phrase):
    config = json.loads((tiny_folder / "config.json").read_text())
    folder = rewritten(tiny_folder, tmp_path, "config.json", {**config, **changes})
    with pytest.raises(ModelError) as err:
        load_model(str(folder))
    assert str(err.value).startswith("config.json: ") and phrase in str(err.value), str(err.value)


def test_a_tokenizer_larger_than_the_embedding(tmp_path):
    write_chat_folder(tmp_path / "m", vocab_size=300)  # the tokenizer has 346 tokens
    with pytest.raises(ModelError, match="the tokenizer has 346 tokens, but the embedding has 300 rows"):
        load_model(str(tmp_path / "m"))


def quantized_copy(folder, tmp_path, change=lambda weights: None):
    return quantize_folder(folder, tmp_path / "quantized", change)


UP = "model.layers.0.mlp.up_proj"


@pytest.mark.parametrize(
    "change, phrase",
    [
        (
            lambda w: w.update({f"{UP}.scales": mx.zeros((128, 0)), f"{UP}.biases": mx.zeros((128, 0))}),
            "scales (128, 0)",
        ),
        (lambda w: w.update({f"{UP}.weight": w[f"{UP}.weight"][:, :-1]}), "weight (128, 7) (uint32), scales (128, 2)"),
        (lambda w: w.update({f"{UP}.weight": w[f"{UP}.weight"].astype(mx.float16)}), "weight (128, 8) (float)"),
        (lambda w: w.update({f"{UP}.scales": w[f"{UP}.scales"].astype(mx.int32)}), "scales (128, 2) (other)"),
        (lambda w: w.pop(f"{UP}.biases"), "biases None"),
        (lambda w: w.update({"model.layers.0.mlp.stray.scales": mx.zeros((4, 2))}), "'model.layers.0.mlp.stray'"),
    ],
    ids=[
        "zero-width scales",
        "a width no bits give",
        "a float weight",
        "integer scales",
        "no biases",
        "scales without a weight",
    ],  # fmt: skip
)
def test_quantized_tensors_mlx_cannot_read(tiny_folder, tmp_path, change, phrase):
    """Before the fix: a bare ZeroDivisionError (in the fit check, then in the loader), mx.dequantize's or the
    kernel's ValueError on the first turn, a KeyError."""
    with pytest.raises(ModelError) as err:
        load_model(str(quantized_copy(tiny_folder, tmp_path, change)))
    line = str(err.value)
    assert line.startswith("'quantized': the quantized tensor") and phrase in line and "\n" not in line, line


def test_a_tensor_the_architecture_does_not_have_is_one_line(tiny_folder, tmp_path):
    """MLX's own error lists the names over several lines (found by the fuzz tests: "stray beside it")."""
    copy = tmp_path / "stray"
    shutil.copytree(tiny_folder, copy)
    weights = mx.load(str(copy / "model.safetensors"))
    mx.save_safetensors(str(copy / "model.safetensors"), {**weights, "model.embed_tokens_stray.weight": mx.zeros((2,))})
    with pytest.raises(ModelError) as err:
        load_model(str(copy))
    line = str(err.value)
    assert "\n" not in line and "not in model: model.embed_tokens_stray.weight" in line, line


def test_a_quantized_folder_loads(tiny_folder, tmp_path):
    assert load_model(str(quantized_copy(tiny_folder, tmp_path))).layout in ("quantized", "float32")


# --- tokenizer files and GGUF vocabularies ---------------------------------------------------------------


@pytest.mark.parametrize(
    "file, content, phrase",
    [
        ("tokenizer.json", "{not json", "tokenizer.json is not valid JSON"),
        ("tokenizer.json", "[" * 100_000 + "]" * 100_000, "tokenizer.json is not valid JSON"),
        ("tokenizer.json", {"version": "1.0"}, "has no tokenizer model in it"),
        ("tokenizer.json", {"model": {"type": "BPE", "vocab": [1, 2], "merges": 7}}, "tokenizers library can build"),
        ("tokenizer_config.json", {"eos_token": 5}, "'eos_token' is 5"),
        ("tokenizer_config.json", "[]", "tokenizer_config.json is not a JSON object"),
        ("config.json", "\xff\xfe", "config.json is not valid JSON"),
    ],
)
def test_tokenizer_files(tiny_folder, tmp_path, file, content, phrase):
    with pytest.raises(ModelError) as err:
        load_model(str(rewritten(tiny_folder, tmp_path, file, content)))
    assert phrase in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_json_file_too_large_is_refused_before_it_is_parsed(tmp_path):
    big = tmp_path / "config.json"
    big.write_bytes(b"[" + b"[]," * (tokenizer_checks.MAX_SMALL_JSON // 3) + b"[]]")
    with pytest.raises(
        ModelError, match="config.json is 16,777,2.. bytes; glasschat reads such a file up to 16,777,216"
    ):
        tokenizer_checks.read_json(big)


VOCAB = {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.tokens": ["a", "b", "ab"],
    "tokenizer.ggml.token_type": mx.array([1, 1, 1], dtype=mx.int32),
    "tokenizer.ggml.merges": ["a b"],
}


@pytest.mark.parametrize(
    "changes, phrase",
    [
        (
            {"tokenizer.ggml.bos_token_id": mx.array(3, dtype=mx.uint32)},
            "'tokenizer.ggml.bos_token_id' is 3, not a token",
        ),
        ({"tokenizer.ggml.eos_token_id": mx.array(2**32 - 1, dtype=mx.uint32)}, "is 4294967295"),
        ({"tokenizer.ggml.token_type": mx.array([1, 1], dtype=mx.int32)}, "holds 2 values for 3 tokens"),
        ({"tokenizer.ggml.merges": ["ab"]}, "'left right' pairs"),
        ({"tokenizer.ggml.tokens": mx.array([1, 2, 3])}, "not a list of text"),
        ({"tokenizer.ggml.tokens": ["x" * 5000]}, "the longest 5,000 characters"),
        ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.token_type": mx.array([6, 1, 1])}, "marked as a byte"),
        ({"tokenizer.ggml.scores": mx.array([0.0, float("nan"), 1.0])}, "not a finite number"),
        ({"tokenizer.ggml.add_bos_token": mx.array([True, False])}, "not a single true or false"),
    ],
)
def test_gguf_vocabularies(changes, phrase):
    from model.loading.gguf_vocab import vocab_from_gguf

    with pytest.raises(ModelError) as err:
        vocab_from_gguf({**VOCAB, **changes}, "m.gguf")
    assert str(err.value).startswith("m.gguf: ") and phrase in str(err.value), str(err.value)


def test_a_vocabulary_the_library_refuses_is_one_line():
    from model.loading.gguf_vocab import vocab_from_gguf

    with pytest.raises(ModelError, match=r"^m.gguf: its vocabulary cannot be built \(Exception: .*re-download it.$"):
        vocab_from_gguf({**VOCAB, "tokenizer.ggml.merges": ["a z"]}, "m.gguf")  # z is not a token


def test_the_checks_cost_nothing_on_the_default_model(default_gguf_path):
    """Every structural check passes on the real file (each refusal above is a file llama.cpp refuses too)."""
    meta, infos, start = gguf_header.read_header(default_gguf_path)
    assert len(infos) == 272 and start == 1_785_664
    tokenizer_checks.check_gguf_vocab(
        {k: mx.array(v) if isinstance(v, np.ndarray) else v for k, v in meta.items()}, "d"
    )
    assert [F32, U64] == [6, 10]  # the type codes the helpers write
