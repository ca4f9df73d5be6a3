"""The engines the benchmark runs in its own process: ours and mlx-lm (llama.cpp: `bench.llama_peer`).

Each runner takes token ids and reports wall times for prefill (time to the
first token) and decode, on the same model file, in the same process.
"""

import importlib
import time
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from model.cache.kv_factory import make_cache
from model.cache.settings import MIN_CAPACITY, CacheSettings
from model.internals.needs import StepNeeds
from model.loading.loader import LoadedModel, load_model
from model.runtime.generate import decode, prefill
from model.runtime.settings import SamplingSettings

GREEDY = SamplingSettings()


class OurEngine:
    """Our prefill and decode on a loaded model; `top_k` rows of the sampled distribution at each step, as the
    Next-token panel asks (0: none, what a closed panel costs)."""

    def __init__(self, loaded: LoadedModel, top_k: int = 10, name: Optional[str] = None):
        self.loaded = loaded
        self.top_k = top_k
        self.name = name or f"glasschat ({loaded.layout})"

    @classmethod
    def load(cls, source: Optional[str], layout: str, top_k: int = 10) -> "OurEngine":
        return cls(load_model(source, layout), top_k)

    def _cache(self, capacity):
        return make_cache(self.loaded.model, CacheSettings(max_kv_size=max(capacity, MIN_CAPACITY), keep=4))

    def time_to_first_token(self, ids) -> float:
        cache = self._cache(len(ids) + 8)
        start = time.perf_counter()
        needs = StepNeeds(top_k=self.top_k)
        steps = decode(self.loaded.model, cache, prefill(self.loaded.model, cache, ids), GREEDY, 1, needs=needs)
        next(steps)
        return time.perf_counter() - start

    def decode_times(self, ids, n) -> list[float]:
        cache = self._cache(len(ids) + n + 8)
        times = []
        needs = StepNeeds(top_k=self.top_k)
        for _ in decode(self.loaded.model, cache, prefill(self.loaded.model, cache, ids), GREEDY, n, needs=needs):
            times.append(time.perf_counter())
        return times

    def info(self):
        return self.loaded.info()


class MlxLmEngine:
    """mlx-lm's own Llama class and generation loop, on the GGUF's own tensors."""

    def __init__(self, ours: OurEngine, quantized: bool):
        from mlx_lm.models import llama

        self.generate = importlib.import_module("mlx_lm.generate")
        c = ours.loaded.config
        args = llama.ModelArgs(
            model_type="llama",
            hidden_size=c.hidden_size,
            num_hidden_layers=c.num_hidden_layers,
            intermediate_size=c.intermediate_size,
            num_attention_heads=c.num_attention_heads,
            rms_norm_eps=c.rms_norm_eps,
            vocab_size=c.vocab_size,
            head_dim=c.head_dim,
            max_position_embeddings=c.max_position_embeddings,
            num_key_value_heads=c.num_key_value_heads,
            attention_bias=c.attention_bias,
            rope_theta=c.rope_theta,
            rope_traditional=c.rope_traditional,
            rope_scaling=c.rope_scaling,
            tie_word_embeddings=c.tie_word_embeddings,
        )
        self.model = llama.Model(args)
        # Unfused, so the names are the checkpoint's (and mlx-lm's) own.
        source = load_model(ours.loaded.path, "quantized" if quantized else "float32", fuse=False).model
        from mlx.utils import tree_flatten

        weights = dict(tree_flatten(source.parameters()))
        if quantized:
            # As mlx-lm itself loads the file: float16 scales (ours become float32 on CPU).
            weights = {k: v.astype(mx.float16) if k.endswith((".scales", ".biases")) else v for k, v in weights.items()}
            groups = {name[: -len(".scales")] for name in weights if name.endswith(".scales")}

            def predicate(path, module):
                if path not in groups:
                    return False
                packed, scales = weights[f"{path}.weight"], weights[f"{path}.scales"]
                return {"group_size": 32, "bits": packed.shape[-1] * 32 // (scales.shape[-1] * 32)}

            nn.quantize(self.model, class_predicate=predicate)
        self.model.load_weights(list(weights.items()), strict=True)
        mx.eval(self.model.parameters())
        self.name = f"mlx-lm ({'quantized' if quantized else 'float32'})"

    def _steps(self, ids, n):
        return self.generate.generate_step(mx.array(ids), self.model, max_tokens=n)

    def time_to_first_token(self, ids) -> float:
        start = time.perf_counter()
        token, _ = next(self._steps(ids, 1))
        int(token)
        return time.perf_counter() - start

    def decode_times(self, ids, n) -> list[float]:
        times = []
        for token, _ in self._steps(ids, n):
            int(token)
            times.append(time.perf_counter())
        return times
