"""Tiny random-weight checkpoints written to disk, for oracle and cache tests."""

import json
from pathlib import Path

import mlx.core as mx

BASE_CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 96,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}

VARIANTS = {
    # Llama 3: grouped-query attention and the long-context RoPE rule.
    "llama3": {
        "model_type": "llama",
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    },
    "mistral": {"model_type": "mistral", "rope_theta": 1000000.0},
    # Qwen2: biases on q, k and v.
    "qwen2": {"model_type": "qwen2", "rope_theta": 1000000.0},
    # SmolLM-style: tied head.
    "llama_tied": {"model_type": "llama", "rope_theta": 10000.0, "tie_word_embeddings": True},
}


def random_weights(config: dict, seed: int = 0) -> dict[str, mx.array]:
    key = mx.random.key(seed)
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd = d // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (v, d)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (d, d),
                p + "self_attn.k_proj.weight": (kv, d),
                p + "self_attn.v_proj.weight": (kv, d),
                p + "self_attn.o_proj.weight": (d, d),
                p + "mlp.gate_proj.weight": (f, d),
                p + "mlp.up_proj.weight": (f, d),
                p + "mlp.down_proj.weight": (d, f),
                p + "input_layernorm.weight": (d,),
                p + "post_attention_layernorm.weight": (d,),
            }
        )
        if config["model_type"] == "qwen2":
            shapes.update(
                {
                    p + "self_attn.q_proj.bias": (d,),
                    p + "self_attn.k_proj.bias": (kv,),
                    p + "self_attn.v_proj.bias": (kv,),
                }
            )
    weights = {}
    for name, shape in sorted(shapes.items()):
        key, sub = mx.random.split(key)
        if name.endswith("norm.weight"):
            weights[name] = 1.0 + 0.1 * mx.random.normal(shape, key=sub)
        else:
            weights[name] = 0.2 * mx.random.normal(shape, key=sub)
    return weights


def write_tiny_folder(folder: Path, variant: str, seed: int = 0) -> dict:
    config = {**BASE_CONFIG, **VARIANTS[variant]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    mx.save_safetensors(str(folder / "model.safetensors"), random_weights(config, seed))
    return config


def build_tiny_model(variant: str, seed: int = 0, **overrides):
    """Our Transformer with the tiny random weights, in float32, without touching disk."""
    from model.loading.config import config_from_hf
    from model.loading.weights import apply_weights
    from model.network.transformer import Transformer

    config = {**BASE_CONFIG, **VARIANTS[variant], **overrides}
    model = Transformer(config_from_hf(config))
    apply_weights(model, random_weights(config, seed), 64, "float32")
    return model


# --- a tiny chat model on disk: config, random weights, a byte-level BPE and a chat template ----------

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
_CORPUS = [
    "The cat sat on the mat. The dog sat on the log. A bird sang in the tree.",
    "Hello! How are you today? I am fine, thank you. What is the weather like?",
    "Hmm, let me think. The answer is yes.\n\nOK\n\nHmm\n\nOK\n\nHmm\n\nOK\n\nHmm\n\nOK\n\n",
]


# Qwen2's pre-tokenizer split: a run of newlines stays one piece, so "\n\n" can be one token.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def tiny_tokenizer_json() -> str:
    """A byte-level BPE of about 400 tokens trained on a few sentences (deterministic), with ChatML and think tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=CHAT_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(_CORPUS, trainer)
    return tk.to_str()


def write_chat_folder(folder: Path, variant: str = "llama_tied", seed: int = 0, template: str = CHATML, **overrides):
    """A loadable model folder: `load_model(str(folder))` gives a working (random) chat model."""
    from tokenizers import Tokenizer

    tokenizer = tiny_tokenizer_json()
    vocab = Tokenizer.from_str(tokenizer).get_vocab_size(with_added_tokens=True)
    config = {**BASE_CONFIG, **VARIANTS[variant], "vocab_size": vocab, **overrides}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    mx.save_safetensors(str(folder / "model.safetensors"), random_weights(config, seed))
    (folder / "tokenizer.json").write_text(tokenizer)
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": template, "bos_token": None, "eos_token": "<|im_end|>"})
    )
    return config


def write_tiny_chat_folder(folder: Path, gguf_path: Path, seed: int = 0, logit_scale: float = 1.0) -> Path:
    """A tiny random model that speaks the default model's vocabulary: its tokenizer and chat template,
    so an Engine runs whole conversations on it in milliseconds per token (replies are gibberish).

    `logit_scale` multiplies the tied embedding, so the logits too (the norms undo it on the way in):
    at 1 their spread is ~1.6 over 49k tokens, a nearly flat distribution; at 4 a real model's few
    likely tokens."""
    from model.loading.loader import _read_gguf
    from model.loading.tokenizer import tokenizer_from_gguf

    _, meta = _read_gguf(gguf_path)
    config = {**BASE_CONFIG, **VARIANTS["llama_tied"], "vocab_size": int(meta["llama.vocab_size"].item())}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    weights = random_weights(config, seed)
    weights["model.embed_tokens.weight"] = weights["model.embed_tokens.weight"] * logit_scale
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    tokenizer_from_gguf(meta).markup.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"chat_template": meta["tokenizer.chat_template"], "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
        )
    )
    return folder


# --- a scripted thinking model: it always thinks "Hmm", then answers "OK" -----------------------------

# Qwen3's rules for thinking, as its own template has them: a reply's thinking is kept only
# after the last user message, and enable_thinking=False closes an empty block in the prompt.
QWEN3_STYLE = (
    "{%- set ns = namespace(last_query=-1) %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}"
    "{%- set content = m.content %}{%- set reasoning = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
THOUGHT, ANSWER = "Hmm", "OK"


def script(tokenizer_json: str) -> dict[int, int]:
    """Each token of the scripted reply and the one that follows it: the prompt's last newline opens the
    thinking, "Hmm", closes it, a blank line, "OK", end of turn."""
    from tokenizers import Tokenizer

    tk = Tokenizer.from_str(tokenizer_json)
    one = {}
    for text in ("\n", "<think>", THOUGHT, "</think>", "\n\n", ANSWER, "<|im_end|>"):
        ids = tk.encode(text).ids
        assert len(ids) == 1, (text, ids)
        one[text] = ids[0]
    chain = ["\n", "<think>", THOUGHT, "</think>", "\n\n", ANSWER, "<|im_end|>"]
    return {one[a]: one[b] for a, b in zip(chain, chain[1:])}


def write_thinking_folder(folder: Path, template: str = QWEN3_STYLE, seed: int = 0) -> dict:
    """A tiny model whose greedy reply follows `script`: each scripted token's embedding is a direction of
    its own, and the head maps it to the next one; the layers are random but small, so attention still
    mixes the context in (the logits differ with it) without changing the argmax."""
    config = write_chat_folder(folder, "llama_tied", seed, template, tie_word_embeddings=False)
    weights = dict(mx.load(str(folder / "model.safetensors")))
    successor = script((folder / "tokenizer.json").read_text())
    d = config["hidden_size"]
    embed, head = weights["model.embed_tokens.weight"], weights["lm_head.weight"]
    for k, (token, following) in enumerate(successor.items()):
        direction = mx.zeros((d,)).at[k].add(1.0)
        embed[token] = 4.0 * direction
        head[following] = 3.0 * direction
    weights["model.embed_tokens.weight"], weights["lm_head.weight"] = embed, head
    weights["model.norm.weight"] = mx.ones((d,))
    for name in weights:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name] = 0.05 * weights[name]
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    return config
