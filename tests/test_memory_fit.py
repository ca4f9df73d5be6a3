"""A model that cannot fit is refused before any weight is read, in one line with the bytes (model.loading.memory_fit).

The estimate is checked against what loading then holds (the weights' `nbytes`, the cache's
bytes when full), on both code paths; the decision against a stubbed device: a GPU with a
small recommended working set, a CPU with little memory, a model that just fits. The wired
limit is set as mlx-lm's `generate` sets it, only where the GPU reports a working set.
"""

import json
from pathlib import Path

import mlx.core as mx
import pytest
from code_paths import running_path
from engine_harness import SyncChat

from model import compute_path
from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings
from model.errors import ModelError
from model.loading import gguf_file, loader, memory_fit
from model.loading.config import config_from_gguf
from model.loading.default_model import default_model_path
from model.loading.weights import weight_bytes

GB = 10**9


def default_estimate(layout="auto", capacity=2048, kv_bits=None):
    meta, infos, _ = gguf_file.read_header(default_model_path())
    config = config_from_gguf(meta, {info.name for info in infos})
    kernel = compute_path.on_cpu() and _kernel_built()
    return memory_fit.estimate(config, memory_fit.gguf_tensor_sizes(infos), layout, capacity, kv_bits, kernel)


def _kernel_built() -> bool:
    from model.kernels import qmv

    return qmv.extension() is not None


def test_default_cache_settings_are_the_estimates():
    assert CacheSettings().max_kv_size == memory_fit.DEFAULT_CAPACITY
    from model.runtime.generate import PREFILL_CHUNK

    assert PREFILL_CHUNK == memory_fit.PREFILL_BLOCK


@pytest.mark.parametrize(
    "code_path, layout, kv_bits",
    [("cpu", "auto", None), ("gpu", "auto", None), ("cpu", "quantized", 4), ("gpu", "float32", 8)],
    indirect=["code_path"],
)
def test_the_estimate_is_what_loading_holds(code_path, layout, kv_bits):
    """Weights and a full cache, from the headers, equal the loaded model's and cache's bytes exactly."""
    estimate = default_estimate(layout, 2048, kv_bits)
    lm = loader.load_model(None, layout=layout)
    cache = make_cache(lm.model, CacheSettings(2048, kv_bits=kv_bits))
    assert estimate.weights == weight_bytes(lm.model)
    assert estimate.cache == cache.state().bytes_full
    assert 0 < estimate.working < estimate.weights + estimate.cache


def stub_gpu(monkeypatch, info: dict):
    monkeypatch.setattr(compute_path, "device", lambda: "gpu")
    monkeypatch.setattr(memory_fit, "device_info", lambda: info)


def never_read(monkeypatch):
    """Reading any tensor data fails the test: the refusal must come first."""

    def read(*args, **kwargs):
        raise AssertionError("weights were read before the memory check")

    monkeypatch.setattr(loader, "_read_gguf_with_types", read)
    monkeypatch.setattr(mx, "load", read)


def test_a_gpu_with_a_small_working_set_refuses_before_reading(monkeypatch):
    stub_gpu(monkeypatch, {"max_recommended_working_set_size": 50_000_000, "memory_size": 8 * GB})
    never_read(monkeypatch)
    with pytest.raises(ModelError) as refused:
        loader.load_model(None)
    line = str(refused.value)
    needed = default_estimate().total
    assert f"needs {needed / 1e9:.1f} GB, this GPU's recommended working set has 0.1 GB" in line
    assert "KV cache of 2048 tokens" in line and "--max-kv-size" in line and "\n" not in line


def test_cuda_reports_its_memory_instead(monkeypatch):
    stub_gpu(monkeypatch, {"total_memory": 40_000_000, "free_memory": 10})
    assert memory_fit.available_memory() == memory_fit.Memory(40_000_000, "this GPU")


def test_a_cpu_with_little_memory_refuses_in_the_engine_with_one_line(monkeypatch):
    monkeypatch.setattr(memory_fit, "machine_memory", lambda: 100_000_000)
    never_read(monkeypatch)
    with pytest.raises(ModelError, match=r"needs \d+\.\d GB, this machine has 0\.1 GB"):
        SyncChat()  # the engine's own load: what `glasschat` and the app show is this line


def test_a_model_that_just_fits_loads_and_one_byte_less_does_not(monkeypatch):
    needed = default_estimate().total
    monkeypatch.setattr(memory_fit, "machine_memory", lambda: needed)
    assert loader.load_model(None).config.num_hidden_layers == 30
    monkeypatch.setattr(memory_fit, "machine_memory", lambda: needed - 1)
    with pytest.raises(ModelError, match="needs"):
        loader.load_model(None)


def test_a_smaller_cache_or_a_quantized_one_makes_it_fit(monkeypatch):
    full = default_estimate(capacity=2048)
    monkeypatch.setattr(memory_fit, "machine_memory", lambda: full.total - 1)
    with pytest.raises(ModelError):
        loader.load_model(None, capacity=2048)
    loader.load_model(None, capacity=1024)
    loader.load_model(None, capacity=2048, kv_bits=4)


def with_tokenizer(folder, tiny_chat_model) -> int:
    """The tiny chat model's tokenizer (the default model's) copied in; its vocabulary's size."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text((Path(tiny_chat_model) / name).read_text())
    return json.loads((Path(tiny_chat_model) / "config.json").read_text())["vocab_size"]


def test_a_plausible_config_whose_cache_cannot_fit_is_refused_before_anything_is_allocated(
    tmp_path, monkeypatch, tiny_chat_model
):
    """Its files may hold little; the cache its shape needs is what cannot fit. (100,000 layers is refused
    earlier, as implausible, by model.loading.config_checks: test_hostile_models.py.)"""
    from tiny_models import write_tiny_folder

    config = write_tiny_folder(tmp_path, "llama3")
    with_tokenizer(tmp_path, tiny_chat_model)
    shape = {"num_hidden_layers": 1024, "max_position_embeddings": 4096}  # config_checks' largest layer count
    (tmp_path / "config.json").write_text(json.dumps({**config, **shape}))
    monkeypatch.setattr(memory_fit, "machine_memory", lambda: 300_000_000)
    never_read(monkeypatch)
    with pytest.raises(ModelError, match=r"needs 0\.5 GB, this machine has 0\.3 GB") as refused:
        loader.load_model(str(tmp_path))
    # 1,024 layers x 2,048 slots x K and V x 2 heads x 16 x float32
    assert "KV cache of 2048 tokens 0.5 GB" in str(refused.value)


def test_a_quantized_folder_is_sized_from_its_headers(tmp_path, code_path, tiny_chat_model):
    """MLX's 4-bit layout in safetensors: weights unpacked by their bits, scales as stored (float32 on the cpu path)."""
    from tiny_models import random_weights, write_tiny_folder

    config = write_tiny_folder(tmp_path, "llama_tied")
    config["vocab_size"] = with_tokenizer(tmp_path, tiny_chat_model)  # an embedding row for every token
    weights = {}
    for name, value in random_weights(config).items():
        if value.ndim == 2:
            w, scales, biases = mx.quantize(value.astype(mx.float16), group_size=32, bits=4)
            stem = name[: -len(".weight")]
            weights.update({name: w, f"{stem}.scales": scales, f"{stem}.biases": biases})
        else:
            weights[name] = value.astype(mx.float16)
    mx.save_safetensors(str(tmp_path / "model.safetensors"), weights)
    (tmp_path / "config.json").write_text(json.dumps({**config, "quantization": {"group_size": 32, "bits": 4}}))
    sizes = memory_fit.safetensors_tensor_sizes([tmp_path / "model.safetensors"], 32)
    lm = loader.load_model(str(tmp_path), layout="quantized")
    assert memory_fit.weight_bytes(sizes, "quantized") == weight_bytes(lm.model)
    lm32 = loader.load_model(str(tmp_path), layout="float32")
    assert memory_fit.weight_bytes(sizes, "float32") == weight_bytes(lm32.model)


def test_the_wired_limit_is_set_as_mlx_lm_sets_it(monkeypatch):
    """To the recommended working set, where the GPU reports one; a model over 90% of it is noted."""
    limits = []
    monkeypatch.setattr(mx, "set_wired_limit", lambda n: limits.append(n) or 0)
    metal = memory_fit.Memory(8 * GB, "this GPU's recommended working set", 8 * GB)
    assert memory_fit.wire(1 * GB, metal) == {"wired_limit": "8.0 GB"} and limits == [8 * GB]
    close = memory_fit.wire(int(7.5 * GB), metal)
    assert "94% of the recommended working set" in close["memory_note"]
    assert memory_fit.wire(1 * GB, memory_fit.Memory(40 * GB, "this GPU")) == {}  # CUDA: no recommended set
    assert memory_fit.wire(1 * GB, memory_fit.Memory(24 * GB, "this machine")) == {}
    assert limits == [8 * GB, 8 * GB]


def test_the_gpu_path_reports_mlx_s_allocator(tiny_chat_model):
    """Model info and the KV cache panel's state carry MLX's active and peak bytes on the gpu path only."""
    for path in ("cpu", "gpu"):
        with running_path(path):
            run = SyncChat(model=tiny_chat_model, max_tokens=2)
            run.send("Hello.")
            state = run.events[-1].cache
            info = run.loaded.info()
            if path == "gpu":
                assert 0 < state.mlx_active <= state.mlx_peak and info["mlx_active_bytes"] > 0
            else:
                assert state.mlx_active == state.mlx_peak == 0 and "mlx_active_bytes" not in info
