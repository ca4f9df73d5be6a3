"""Turn what the user named (a GGUF file, a model folder, a Hub id, or nothing) into a ready model."""

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
from model.loading import config_checks, gguf_file, hub, memory_fit, safetensors_checks
from model.loading.chat_template import ChatTemplate
from model.loading.default_model import default_model_path
from model.loading.fusion import fuse_weights
from model.loading.gguf_checks import BadGGUF
from model.loading.tokenizer import TextTokenizer, tokenizer_from_folder, tokenizer_from_gguf
from model.loading.tokenizer_checks import MAX_SMALL_JSON, read_json
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
    return tokenizer_from_gguf(meta, path.name)


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
        raise _unreadable(path, exc) from None
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
    except Exception as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: Exception) -> ModelError:
    """The one line for a GGUF that breaks the format (gguf_checks) or that a reader could not read."""
    if isinstance(exc, BadGGUF):
        advice = "; re-download it" if exc.damaged else ""
        return ModelError(f"'{path.name}' {exc}{advice}.")
    # mlx raises plain RuntimeError/ValueError for short reads
    return ModelError(f"'{path.name}' is truncated or corrupt ({str(exc).splitlines()[0][:80]}): re-download it.")


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
    header_config = config_checks.gguf_config(header_meta, {info.name for info in infos}, path.name)
    fits(header_config, memory_fit.gguf_tensor_sizes(infos))
    tensors, meta, types = _read_gguf_with_types(path)
    config = config_checks.gguf_config(meta, set(tensors), path.name)
    tokenizer = tokenizer_from_gguf(meta, path.name)
    weights = rename_gguf(tensors, config)
    naming = config_checks.field_namer("gguf", meta["general.architecture"])
    _check_against_weights(config, weights, _GGUF_GROUP_SIZE, tokenizer, path.name, naming, path.name)
    progress(f"building {config.architecture} with {config.num_hidden_layers} layers")
    model, used = _build(config, weights, _GGUF_GROUP_SIZE, layout, fuse)
    template = _template(meta.get("tokenizer.chat_template"), tokenizer, f"{path.name}'s tokenizer.chat_template")
    return LoadedModel(model, config, tokenizer, template, str(path), str(path), used, gguf_file.describe(types))


def _load_folder(path: Path, layout: str, progress: Progress, fuse: bool, fits: _FitCheck) -> LoadedModel:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise ModelError(f"'{path}' has no config.json: give a Hugging Face or MLX model folder.")
    raw = read_json(cfg_path, MAX_SMALL_JSON)
    config = config_checks.hf_config(raw, cfg_path.name)
    tokenizer = tokenizer_from_folder(path)
    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise ModelError(f"'{path}' has no model*.safetensors files: the weights are missing.")
    group_size = _group_size(raw, cfg_path.name)
    for f in files:  # before the fit check and mx.load, which both trust the header
        try:
            safetensors_checks.read_header(f)
        except safetensors_checks.BadSafetensors as exc:
            raise ModelError(f"'{f.name}' {exc}: re-download it.") from None
    fits(config, memory_fit.safetensors_tensor_sizes(files, group_size))
    progress(f"reading {len(files)} safetensors file(s)")
    weights = {}
    for f in files:
        try:
            weights.update(mx.load(str(f)))
        except Exception:
            raise ModelError(f"'{f.name}' is truncated or corrupt: re-download it.")
    naming = config_checks.field_namer("hf")
    _check_against_weights(config, weights, group_size, tokenizer, cfg_path.name, naming, f"'{path.name}'")
    model, used = _build(config, weights, group_size, layout, fuse)
    source, name = _folder_template(path)
    template = _template(source, tokenizer, name)
    return LoadedModel(model, config, tokenizer, template, str(path), str(path), used)


def _check_against_weights(
    config, weights: dict, group_size: int, tokenizer: TextTokenizer, file: str, name, where: str
) -> None:
    """Before anything is built: the config describes these tensors, the quantized ones are readable,
    and every token has an embedding row. `file` is the config's, `where` the weights'."""
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    config_checks.check_weights(config, shapes, file, name)
    kinds = {k: _kind(v.dtype) for k, v in weights.items()}
    config_checks.check_quantized(shapes, kinds, group_size, where)
    config_checks.check_vocabulary(tokenizer.vocab_size, config.vocab_size, file)


def _kind(dtype: mx.Dtype) -> str:
    return "uint32" if dtype == mx.uint32 else "float" if mx.issubdtype(dtype, mx.floating) else "other"


def _group_size(raw: dict, file: str) -> int:
    """MLX quantization's group size (64 unless config.json says otherwise)."""
    quantization = raw.get("quantization") or {}
    size = quantization.get("group_size", 64) if isinstance(quantization, dict) else None
    if size not in (32, 64, 128):
        raise ModelError(
            f"{file}: quantization.group_size is {str(size)[:20]}; MLX quantizes in groups of 32, 64 or 128."
        )
    return size


def _folder_template(path: Path) -> tuple[Optional[str], str]:
    """The template's text and where it came from."""
    jinja = path / "chat_template.jinja"
    if jinja.exists():
        return read_text(jinja), jinja.name
    cfg_path = path / "tokenizer_config.json"
    if cfg_path.exists():
        template = read_json(cfg_path).get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            named = [t for t in template if isinstance(t, dict) and t.get("name") == "default"]
            template = named[0].get("template") if named else None
        return template, f"{cfg_path.name}'s chat_template"
    return None, ""


def read_text(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_SMALL_JSON:
        raise ModelError(f"{path.name} is {size:,} bytes; a chat template is a few kilobytes: it is not a real one.")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"{path.name} is not UTF-8 text: re-download it.") from None


def _template(source: Optional[str], tokenizer: TextTokenizer, name: str = "") -> ChatTemplate:
    bos = tokenizer.markup.id_to_token(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
    eos = tokenizer.markup.id_to_token(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
    if source is not None and not isinstance(source, str):
        raise ModelError(f"The chat template ({name}) is not text: the model's files are broken.")
    return ChatTemplate(source, bos_token=bos or "", eos_token=eos or "", name=name)
