"""A model the user points at that can't be used gets one line and a non-zero exit."""

import json

import mlx.core as mx
from cli_helpers import assert_one_line_error, glasschat


def test_missing_path(tmp_path):
    assert_one_line_error(glasschat("run", "hi", "--model", str(tmp_path / "nope.gguf")), "No model at")


def test_truncated_gguf(tmp_path, default_gguf_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(default_gguf_path.read_bytes()[:3_000_000])
    assert_one_line_error(glasschat("run", "hi", "--model", str(cut)), "truncated or corrupt", "re-download")


def test_random_bytes_named_gguf(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(bytes(range(256)) * 64)
    assert_one_line_error(glasschat("run", "hi", "--model", str(junk)), "not a GGUF file")


def test_unsupported_architecture(tmp_path):
    path = tmp_path / "gpt2.gguf"
    mx.save_gguf(str(path), {"token_embd.weight": mx.zeros((4, 4))}, {"general.architecture": "gpt2"})
    assert_one_line_error(glasschat("run", "hi", "--model", str(path)), "Unsupported architecture 'gpt2'")


def test_folder_without_tokenizer(tmp_path):
    from tiny_models import write_tiny_folder

    write_tiny_folder(tmp_path / "tiny", "llama_tied")
    assert_one_line_error(glasschat("run", "hi", "--model", str(tmp_path / "tiny")), "no tokenizer.json")


def test_folder_of_an_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    assert_one_line_error(glasschat("run", "hi", "--model", str(tmp_path)), "Unsupported architecture")
