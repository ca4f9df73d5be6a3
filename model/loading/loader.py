"""Turn what the user named (a GGUF file, a model folder, a Hub id, or nothing) into a ready model."""

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import mlx.core as mx

from model import compute_path
from model.blas import blas_info
from model.errors import ModelError
from model.loading import gguf_file, hub, memory_fit
from model.loading.chat_template import ChatTemplate
from model.loading.config import config_from_gguf, config_from_hf
from model.loading.default_model import default_model_path
from model.loading.fusion import fuse_weights
from model.loading.tokenizer import TextTokenizer, tokenizer_from_folder, tokenizer_from_gguf
from model.loading.weights import _GGUF_GROUP_SIZE, apply_weights, rename_gguf, weight_bytes, weight_dtype
from model.network.config import ModelConfig
from model.network.quantized import matvec_path
from model.network.transformer import Transformer, parameter_count

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass
class LoadedModel:
    model: Transformer
    config: ModelConfig
    tokenizer: TextTokenizer
    template: ChatTemplate
    source: str  # what the user asked for
    path: str  # the file or folder it resolved to
    layout: str  # weight layout in use: quantized, float32, ...
    file_types: str = ""  # a GGUF's tensor types and how they were read, e.g. "Q4_K x169, Q6_K x25 (as float16)"
    group: Optional[Any] = None  # when sharded over ranks: the group, which reports the full model (model.distributed)
    memory: dict = field(default_factory=dict)  # on a GPU: the wired limit set for it (model.loading.memory_fit)

    def info(self) -> dict:
        """Model facts for the model-info panel and `--json`."""
        if self.group is not None:
            return self.group.info()
        c = self.config
        return {
            "source": self.source,
            "path": self.path,
            "architecture": c.architecture,
            "layers": c.num_hidden_layers,
            "heads": c.num_attention_heads,
            "kv_heads": c.num_key_value_heads,
            "hidden_size": c.hidden_size,
            "context_length": c.max_position_embeddings,
            "vocab_size": c.vocab_size,
            "parameters": parameter_count(self.model),
            "weight_layout": self.layout,
            **({"file_types": self.file_types} if self.file_types else {}),
            "weight_dtype": weight_dtype(self.model),
            "weight_bytes": weight_bytes(self.model),
            "matvec": matvec_path(self.model),
            "backend": compute_path.device(),
            "compute_path": compute_path.current(),  # "gpu" or "cpu": which code path runs (GLASSCHAT_PATH)
            "blas": blas_info().summary(),
            "blas_note": blas_info().note,  # why matrix products are slower than they could be, if they are
            **self.memory,
            **mlx_memory(),
        }


def mlx_memory() -> dict:
    """On the gpu path, what MLX's allocator holds now and at its peak (the process's figures elsewhere)."""
    if not compute_path.on_gpu():
        return {}
    return {"mlx_active_bytes": mx.get_active_memory(), "mlx_peak_bytes": mx.get_peak_memory()}


Progress = Callable[[str], None]
FetchHub = Callable[[str], Path]  # a Hub id to its local snapshot folder


def load_model(
    source: Optional[str] = None,
    layout: str = "auto",
    progress: Progress = lambda _: None,
    fuse: bool = True,
    fetch_hub: Optional[FetchHub] = None,
    capacity: int = memory_fit.DEFAULT_CAPACITY,
    kv_bits: Optional[int] = None,
) -> LoadedModel:
    """`fuse=False` keeps q/k/v and gate/up separate, with checkpoint names (for peers and tests).

    `capacity` and `kv_bits` are the KV cache's to come: a model that cannot fit beside it is
    refused before any weight is read (model.loading.memory_fit)."""
    path = resolve_source(source, progress, fetch_hub)
    fits = _FitCheck(layout, capacity, kv_bits)
    if path.is_dir():
        loaded = _load_folder(path, layout, progress, fuse, fits)
    else:
        loaded = _load_gguf(path, layout, progress, fuse, fits)
    loaded.source = source or "default (SmolLM2-135M-Instruct Q4_1)"
    loaded.memory = memory_fit.wire(weight_bytes(loaded.model), fits.memory)
    return loaded


@dataclass
class _FitCheck:
    """The memory check the readers make once they know the config and the tensors' sizes, before the weights."""

    layout: str
    capacity: int
    kv_bits: Optional[int]
    memory: Optional[memory_fit.Memory] = None

    def __call__(self, config: ModelConfig, tensors: list[memory_fit.TensorSize]) -> None:
        kernel_built = False
        if compute_path.on_cpu():
            from model.kernels import qmv

            kernel_built = qmv.extension() is not None
        needed = memory_fit.estimate(config, tensors, self.layout, self.capacity, self.kv_bits, kernel_built)
        self.memory = memory_fit.available_memory()
        memory_fit.check(needed, self.memory)


def load_tokenizer(source: Optional[str] = None) -> TextTokenizer:
    """Just the tokenizer, for `glasschat tokenize`."""
    path = resolve_source(source, lambda _: None)
    if path.is_dir():
        return tokenizer_from_folder(path)
    _, meta = _read_gguf(path)
    return tokenizer_from_gguf(meta)


def resolve_source(source: Optional[str], progress: Progress, fetch_hub: Optional[FetchHub] = None) -> Path:
    """The file or folder to load; a Hub id is fetched (`fetch_hub` reports the download, see `model.loading.hub`)."""
    if source is None:
        return default_model_path()
    path = Path(source).expanduser()
    if path.exists():
        return path
    if _HUB_ID.match(source) and not source.startswith("."):
        return _from_hub(source, progress, fetch_hub)
    raise ModelError(f"No model at '{source}': give a .gguf file, a model folder, or a Hub id like org/name.")


def _from_hub(repo_id: str, progress: Progress, fetch_hub: Optional[FetchHub]) -> Path:
    progress(f"resolving {repo_id} ({'offline cache' if hub.offline() else 'Hugging Face Hub'})")
    return (fetch_hub or hub.fetch)(repo_id)


def _read_gguf(path: Path) -> tuple[dict, dict]:
    tensors, meta, _ = _read_gguf_with_types(path)
    return tensors, meta


def _read_gguf_header(path: Path) -> tuple[dict, list]:
    """Metadata and tensor infos, nothing of the tensors' data (for the memory check)."""
    _check_magic(path)
    try:
        meta, infos, _ = gguf_file.read_header(path)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"'{path.name}' is truncated or corrupt ({str(exc).splitlines()[0][:80]}): re-download it.")
    return meta, infos


def _check_magic(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelError(f"'{path.name}' is not a GGUF file (wrong magic bytes): point --model at a real model file.")


def _read_gguf_with_types(path: Path) -> tuple[dict, dict, Counter]:
    """Tensors, metadata, and how many tensors of each GGUF type the file holds."""
    _check_magic(path)
    try:
        types = gguf_file.tensor_types(gguf_file.read_header(path, metadata=False)[1])
        if set(types) <= gguf_file.MX_LOAD_TYPES:
            return (*mx.load(str(path), return_metadata=True), types)
        return (*gguf_file.load(path, gguf_file.read_header(path)), types)
    except ModelError:
        raise
    except Exception as exc:  # mlx raises plain RuntimeError/ValueError for short reads
        raise ModelError(f"'{path.name}' is truncated or corrupt ({str(exc).splitlines()[0][:80]}): re-download it.")


def _build(config: ModelConfig, weights: dict, group_size: int, layout: str, fuse: bool) -> tuple[Transformer, str]:
    """The model, fused where its weights allow (see `fusion`), with the weights in `layout`."""
    if config.fused_checkpoint:  # Phi-3 stores q/k/v and gate/up fused already
        fused = weights
    else:
        fused = fuse_weights(weights, config.num_hidden_layers) if fuse else None
    model = Transformer(config, fused=fused is not None)
    used = apply_weights(model, weights if fused is None else fused, group_size, layout)
    return model, used


def _load_gguf(path: Path, layout: str, progress: Progress, fuse: bool, fits: _FitCheck) -> LoadedModel:
    progress(f"reading {path.name}")
    header_meta, infos = _read_gguf_header(path)
    gguf_file.check_readable(infos)  # before the config: the file's types are what the user must change
    fits(config_from_gguf(header_meta, {info.name for info in infos}), memory_fit.gguf_tensor_sizes(infos))
    tensors, meta, types = _read_gguf_with_types(path)
    config = config_from_gguf(meta, set(tensors))
    tokenizer = tokenizer_from_gguf(meta)
    weights = rename_gguf(tensors, config)
    progress(f"building {config.architecture} with {config.num_hidden_layers} layers")
    model, used = _build(config, weights, _GGUF_GROUP_SIZE, layout, fuse)
    template = _template(meta.get("tokenizer.chat_template"), tokenizer)
    return LoadedModel(model, config, tokenizer, template, str(path), str(path), used, gguf_file.describe(types))


def _load_folder(path: Path, layout: str, progress: Progress, fuse: bool, fits: _FitCheck) -> LoadedModel:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise ModelError(f"'{path}' has no config.json: give a Hugging Face or MLX model folder.")
    raw = json.loads(cfg_path.read_text())
    config = config_from_hf(raw)
    tokenizer = tokenizer_from_folder(path)
    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise ModelError(f"'{path}' has no model*.safetensors files: the weights are missing.")
    group_size = (raw.get("quantization") or {}).get("group_size", 64)
    fits(config, memory_fit.safetensors_tensor_sizes(files, group_size))
    progress(f"reading {len(files)} safetensors file(s)")
    weights = {}
    for f in files:
        try:
            weights.update(mx.load(str(f)))
        except Exception:
            raise ModelError(f"'{f.name}' is truncated or corrupt: re-download it.")
    model, used = _build(config, weights, group_size, layout, fuse)
    template = _template(_folder_template(path), tokenizer)
    return LoadedModel(model, config, tokenizer, template, str(path), str(path), used)


def _folder_template(path: Path) -> Optional[str]:
    jinja = path / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text()
    cfg_path = path / "tokenizer_config.json"
    if cfg_path.exists():
        template = json.loads(cfg_path.read_text()).get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return template
    return None


def _template(source: Optional[str], tokenizer: TextTokenizer) -> ChatTemplate:
    bos = tokenizer.markup.id_to_token(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
    eos = tokenizer.markup.id_to_token(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
    return ChatTemplate(source, bos_token=bos or "", eos_token=eos or "")
