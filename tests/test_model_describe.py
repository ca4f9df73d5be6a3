"""Describing a model without loading it (GGUF headers, config.json), the Hub cache's models, and a Hub fetch."""

import json
import os
import subprocess
import sys
import threading

import gguf
import numpy as np
import pytest
from hub_cache import SteppedDownload, tiny_gguf, write_cached_repo

from model.errors import ModelError
from model.loading import hub
from model.loading.describe import GGUF_FILE_TYPES, describe_path, read_gguf_header
from model.loading.gguf_quants import TYPE_NAMES


def test_the_type_names_are_llama_cpps():
    """Our tables against the `gguf` package's enums (llama.cpp's own Python)."""
    for number, name in GGUF_FILE_TYPES.items():
        assert gguf.LlamaFileType(number).name.split("_", 1)[1] == name
    for number, name in TYPE_NAMES.items():
        assert gguf.GGMLQuantizationType(number).name == name


def test_the_default_gguf_is_read_from_its_header(default_gguf_path):
    import mlx.core as mx

    _, reference = mx.load(str(default_gguf_path), return_metadata=True)  # MLX's own GGUF reader
    card = describe_path(default_gguf_path)
    assert card.architecture == reference["general.architecture"] == "llama"
    file_type = reference["general.file_type"].item()
    assert card.quantization == gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_") == "Q4_1"
    assert card.size_bytes == os.path.getsize(default_gguf_path) and not card.problem


def test_without_a_file_type_the_tensors_dominant_type_is_named(tmp_path):
    tensors = {
        "blk.0.ffn_up.weight": (np.ones((64, 256), np.float32), gguf.GGMLQuantizationType.Q8_0),
        "token_embd.weight": (np.ones((40, 64), np.float32), None),  # F32, fewer elements
    }
    path = tiny_gguf(tmp_path / "x.gguf", "gemma3", None, tensors)
    reference = gguf.GGUFReader(path)
    by_type = {}
    for t in reference.tensors:
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_elements)
    assert "general.file_type" not in reference.fields
    assert read_gguf_header(path)["dominant_type"] == max(by_type, key=by_type.get) == "Q8_0"
    assert describe_path(path).architecture == "gemma3"


def test_a_file_that_is_not_gguf_is_described_as_unreadable(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nope" * 10)
    card = describe_path(bad)
    assert card.problem.startswith("unreadable") and card.architecture == "?"
    assert describe_path(tmp_path / "gone.gguf").problem == "not found"


def test_a_gguf_cut_short_is_described_as_unreadable(tmp_path, default_gguf_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(default_gguf_path.read_bytes()[:4096])  # ends inside the vocabulary
    card = describe_path(cut)
    assert (
        card.problem.startswith("the file is truncated or corrupt: it claims 272 tensors") and card.size_bytes == 4096
    )


def test_describing_models_does_not_import_mlx():
    """The Models screen describes files from a UI worker thread: the UI never touches MLX."""
    code = "import sys, model.loading.describe; print('mlx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "config, architecture, quantization",
    [
        ({"model_type": "qwen3", "torch_dtype": "bfloat16"}, "qwen3", "bfloat16"),
        ({"model_type": "llama", "quantization": {"group_size": 64, "bits": 4}}, "llama", "4-bit (group 64)"),
        (
            {"architectures": ["Phi3ForCausalLM"], "quantization_config": {"quant_method": "gptq", "bits": 4}},
            "Phi3ForCausalLM",
            "gptq 4-bit",
        ),
        (
            {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text"}, "dtype": "float16"},
            "gemma3",
            "float16",
        ),
    ],
)
def test_a_folder_is_read_from_its_config(tmp_path, config, architecture, quantization):
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1234)
    card = describe_path(tmp_path)
    assert (card.architecture, card.quantization) == (architecture, quantization)
    assert card.size_bytes == 1234 + len(json.dumps(config))


def write_cache(cache):
    """A folder model, a repo of GGUF files, and a dataset (not a model); returns the blob sizes per repo."""
    config = json.dumps({"model_type": "qwen3", "torch_dtype": "bfloat16"}).encode()
    write_cached_repo(cache, "org/tiny-qwen", {"config.json": config, "model.safetensors": b"\1" * 5000})
    ggufs = tmp = cache.parent / "gguf-src"
    tmp.mkdir(exist_ok=True)
    q4 = tiny_gguf(ggufs / "m-Q4_K_M.gguf", "qwen3", gguf.LlamaFileType.MOSTLY_Q4_K_M).read_bytes()
    q8 = tiny_gguf(ggufs / "m-Q8_0.gguf", "qwen3", gguf.LlamaFileType.MOSTLY_Q8_0).read_bytes()
    write_cached_repo(cache, "org/tiny-gguf", {"m-Q4_K_M.gguf": q4, "m-Q8_0.gguf": q8, "README.md": b"hi"})
    write_cached_repo(cache, "org/data", {"train.json": b"{}"}, kind="datasets")
    return {"org/tiny-qwen": len(config) + 5000, "q4": len(q4), "q8": len(q8)}


def test_the_hub_cache_lists_folder_models_and_each_gguf(tmp_path):
    cache = tmp_path / "hub"
    sizes = write_cache(cache)
    cards = hub.cached_models(cache)
    assert [c.name for c in cards] == ["org/tiny-gguf/m-Q4_K_M.gguf", "org/tiny-gguf/m-Q8_0.gguf", "org/tiny-qwen"]
    q4, q8, folder = cards
    assert (folder.source, folder.architecture, folder.quantization) == ("org/tiny-qwen", "qwen3", "bfloat16")
    assert folder.size_bytes == sizes["org/tiny-qwen"] and folder.where == "Hub cache"
    assert (q4.quantization, q4.size_bytes, q8.quantization, q8.size_bytes) == (
        "Q4_K_M",
        sizes["q4"],
        "Q8_0",
        sizes["q8"],
    )
    assert q4.source.endswith("snapshots/" + "0123456789abcdef0123456789abcdef01234567/m-Q4_K_M.gguf")
    assert hub.cached_models(tmp_path / "no-cache-here") == []


def test_offline_a_cached_id_resolves_and_a_missing_one_is_one_line(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    write_cache(cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert (
        hub.fetch("org/tiny-qwen") == cache / "models--org--tiny-qwen" / "snapshots" / write_cached_repo.__defaults__[0]
    )
    with pytest.raises(ModelError) as err:
        hub.fetch("nobody/not-cached")
    assert str(err.value) == (
        "'nobody/not-cached' is not in the local Hub cache and the Hub can't be reached: "
        "connect once to download it, or pass a local path with --model."
    )


def test_a_fetch_reports_bytes_as_they_come_and_stops_when_cancelled(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cache = tmp_path / "hub"
    download = SteppedDownload(cache, "org/m", {"config.json": b"{}"}, chunks=3, chunk=500)
    reports = []

    def report(transfer):
        reports.append(transfer)
        if transfer.done_bytes == download.allowed * download.chunk:
            download.allow()

    download.allow()
    path = hub.fetch("org/m", report, cache_dir=cache, download=download)
    assert (path / "config.json").read_bytes() == b"{}"
    assert {500, 1000, 1500} <= {r.done_bytes for r in reports} and {r.total_bytes for r in reports} == {1500}

    cancel = []
    download = SteppedDownload(cache, "org/n", {"config.json": b"{}"}, chunks=3, chunk=500)

    def report_and_cancel(transfer):
        if transfer.done_bytes >= 500:
            cancel.append(True)

    download.allow()
    with pytest.raises(hub.DownloadCancelled, match="^Download of org/n cancelled.$"):
        hub.fetch("org/n", report_and_cancel, lambda: bool(cancel), cache_dir=cache, download=download)
    assert download.stopped.wait(30)  # the thread doing the download stopped too


def test_the_speed_is_over_the_last_seconds():
    meter = hub.RateMeter(window_s=3.0)
    assert meter.add(0.0, 0) == 0.0
    assert meter.add(1.0, 1000) == 1000.0
    assert meter.add(2.0, 3000) == 1500.0
    # After a stall the old fast seconds leave the window and the rate falls.
    for t in (3.0, 4.0, 5.0, 6.0):
        rate = meter.add(t, 3000)
    assert rate == 0.0


def test_a_file_count_is_never_shown_as_bytes(tmp_path, monkeypatch):
    """Older huggingface_hub passes our tqdm class to its "Fetching N files" bar only: no bytes are claimed."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cache = tmp_path / "hub"
    release = threading.Event()

    def files_only(repo_id, allow_patterns, cache_dir, tqdm_class=None, local_files_only=False):
        files = tqdm_class(total=3, desc="Fetching 3 files")
        files.update(2)
        assert release.wait(30)
        return write_cached_repo(cache_dir, repo_id, {"config.json": b"{}"})

    reports = []

    def report(transfer):
        reports.append(transfer)
        release.set()

    hub.fetch("org/m", report, cache_dir=cache, download=files_only)
    assert reports and all((r.done_bytes, r.total_bytes) == (0, 0) for r in reports)


def test_without_a_dtype_in_config_the_safetensors_header_says_it(tmp_path):
    import mlx.core as mx

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    mx.save_safetensors(
        str(tmp_path / "model.safetensors"),
        {"a": mx.zeros((64, 64), dtype=mx.bfloat16), "norm": mx.zeros((64,), dtype=mx.float32)},
    )
    assert describe_path(tmp_path).quantization == "bfloat16"  # the dtype holding the most bytes


def test_a_hub_cache_of_hostile_files_marks_each_bad_entry_with_its_reason(tmp_path, default_gguf_path):
    """The Models screen's listing: each bad entry says why in one line; the good ones are listed as ever."""
    cache = tmp_path / "hub"
    good = tiny_gguf(tmp_path / "good.gguf", "qwen3", gguf.LlamaFileType.MOSTLY_Q8_0).read_bytes()
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    weights = len(header).to_bytes(8, "little") + header + b"\0" * 16
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "torch_dtype": "float32"}
    version4 = bytearray(good)
    version4[4:8] = (4).to_bytes(4, "little")
    huge_count = bytearray(good)
    huge_count[8:16] = (2**63).to_bytes(8, "little")
    lying = len(header).to_bytes(8, "little") + header + b"\0" * 8  # 8 bytes where the header says 16
    write_cached_repo(cache, "org/good", {"config.json": json.dumps(config).encode(), "model.safetensors": weights})
    write_cached_repo(
        cache,
        "org/layers",
        {"config.json": json.dumps({**config, "num_hidden_layers": 100_000}).encode(), "model.safetensors": weights},
    )
    write_cached_repo(cache, "org/lying", {"config.json": json.dumps(config).encode(), "model.safetensors": lying})
    write_cached_repo(cache, "org/not-json", {"config.json": b"{", "model.safetensors": weights})
    write_cached_repo(
        cache, "org/ggufs", {"a-good.gguf": good, "b-v4.gguf": bytes(version4), "c-count.gguf": bytes(huge_count)}
    )
    problems = {card.name: card.problem for card in hub.cached_models(cache)}
    assert problems.pop("org/not-json").startswith("config.json is not valid JSON (Expecting property name")
    assert problems == {
        "org/ggufs/a-good.gguf": "",
        "org/ggufs/b-v4.gguf": "the file is GGUF version 4; glasschat reads versions 2 and 3 (as llama.cpp does)",
        "org/ggufs/c-count.gguf": "the file is truncated or corrupt: it claims 9,223,372,036,854,775,808 tensors, "
        f"more than its last {len(good) - 24:,} bytes could hold",
        "org/good": "",
        "org/layers": "config.json: 'num_hidden_layers' is 100000; it must be a whole number from 1 to 1024. "
        "The model's config is broken.",
        "org/lying": "model.safetensors has 8 bytes of data where its tensors take 16: it is truncated or corrupt",
    }
