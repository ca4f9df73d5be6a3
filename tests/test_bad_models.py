"""A model the user points at that can't be used gets one line and a non-zero exit."""

import json

import mlx.core as mx
import pytest
from cli_helpers import assert_one_line_error, glasschat

from model.errors import ModelError
from model.loading.config import config_from_hf


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


# Real config.json fragments (the keys that decide), one per kind of model we do not run.
UNSUPPORTED_FOLDERS = {
    "mixtral": ({"model_type": "mixtral", "num_local_experts": 8}, "mixture-of-experts"),
    "qwen3_moe": ({"model_type": "qwen3_moe", "num_experts": 128}, "mixture-of-experts"),
    "qwen3_next": ({"model_type": "qwen3_next", "num_experts": 512, "linear_num_value_heads": 32}, "hybrid"),
    "falcon_h1": ({"model_type": "falcon_h1"}, "hybrid"),
    "llava": ({"model_type": "llava", "vision_config": {}}, "vision"),
    "gemma3": ({"model_type": "gemma3", "vision_config": {}, "text_config": {}}, "vision"),
    # A family we run, but this checkpoint carries experts.
    "qwen2": ({"model_type": "qwen2", "num_experts": 60}, "mixture-of-experts"),
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_FOLDERS))
def test_unsupported_folder_is_named_with_what_we_run(name):
    cfg, kind = UNSUPPORTED_FOLDERS[name]
    with pytest.raises(ModelError) as err:
        config_from_hf(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert f"Unsupported architecture '{name}' ({kind}" in message
    for family in ("llama", "qwen3", "gemma2", "gemma3_text", "phi3", "smollm3"):
        assert family in message.split(": glasschat runs ")[1]


def test_unsupported_folder_through_the_cli(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_moe", "num_experts": 128}))
    proc = glasschat("run", "hi", "--model", str(tmp_path))
    assert_one_line_error(proc, "Unsupported architecture 'qwen3_moe' (mixture-of-experts)", "qwen3, gemma2")


@pytest.mark.parametrize(
    "arch, extra, kind",
    [
        ("qwen3moe", {}, "mixture-of-experts"),
        ("llama", {"llama.expert_count": 8}, "mixture-of-experts"),  # Mixtral, as llama.cpp writes it
        ("mamba", {"mamba.ssm.conv_kernel": 4}, "state-space"),
        ("clip", {}, "vision projector"),
    ],
)
def test_unsupported_gguf_is_named_with_what_we_run(tmp_path, arch, extra, kind):
    path = tmp_path / f"{arch}.gguf"
    meta = {"general.architecture": arch, **{k: mx.array(v, dtype=mx.uint32) for k, v in extra.items()}}
    mx.save_gguf(str(path), {"token_embd.weight": mx.zeros((4, 4))}, meta)
    proc = glasschat("run", "hi", "--model", str(path))
    assert_one_line_error(proc, f"Unsupported architecture '{arch}' (", kind, "qwen3, gemma2, gemma3, phi3, smollm3")
