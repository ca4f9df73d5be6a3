"""What the model-file fuzz tests change, and the child process they load each result in.

A GGUF is mapped field by field (every count, length, type, value, dimension and offset in its
header, with where each starts and ends), so a mutation can rewrite one field to 0, -1, 2^31, 2^63,
change a value's type, cut the file at a structural boundary, or flip a bit. A model folder is
mutated file by file: config.json's values and keys, tokenizer.json's parts, the chat template,
the safetensors header (its length, each tensor's dtype, shape and offsets) and data, and whole
tensors (reshaped, emptied, cut, retyped, dropped, duplicated) under a well-formed header.
"""

import json
import os
import select
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hypothesis import strategies as st

HERE = Path(__file__).parent
CHILD_TIMEOUT_S = 30  # past this a case is called a hang (the tests assert under 5 s)


# --- the child -----------------------------------------------------------------------------------------


class Child:
    """`fuzz_child.py`, restarted after a case that killed or hung it."""

    def __init__(self, warm: list[str], log: Path):
        self.warm, self.log = warm, log
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": f"{HERE.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.stderr = open(self.log, "ab")  # noqa: SIM115 - kept for the child's life
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "fuzz_child.py"), *self.warm],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )
        ready = self._line(120)
        assert ready == {"ready": True}, f"the fuzz child did not start: {ready} {self.log.read_text()[-2000:]}"

    def _line(self, timeout: float) -> Optional[dict]:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else {"outcome": "died", "text": f"exit status {self.proc.wait()}"}

    def load(self, path: Path) -> dict:
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        result = self._line(CHILD_TIMEOUT_S)
        if result is None:
            self.close()
            result = {"outcome": "hung", "text": f"no answer in {CHILD_TIMEOUT_S} s"}
        if result["outcome"] in ("hung", "died"):
            result["text"] += " · " + self.log.read_text(errors="replace")[-1500:]
            self.close()
            self.start()
        return result

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


# --- a GGUF, field by field ----------------------------------------------------------------------------

_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


@dataclass(frozen=True)
class Field:
    at: int
    size: int
    what: str  # e.g. "kv 12 (llama.block_count) value"
    group: str  # counts, kv, type, tensor


def gguf_fields(path: Path) -> tuple[list[Field], list[int], int]:
    """Every field of the header, the structural boundaries (where a cut is most telling), and where the data starts.

    Arrays of strings (the vocabulary) give their type, count and first few lengths only."""
    data = path.read_bytes()
    fields: list[Field] = [Field(4, 4, "version", "counts"), Field(8, 8, "tensor count", "counts")]
    fields.append(Field(16, 8, "metadata count", "counts"))
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    at, bounds = 24, [0, 4, 8, 16, 24]

    def string(label: str, group: str, record: bool = True) -> str:
        nonlocal at
        (n,) = struct.unpack_from("<Q", data, at)
        if record:
            fields.append(Field(at, 8, f"{label} length", group))
        at += 8 + n
        return data[at - n : at].decode(errors="replace")

    for i in range(n_kv):
        key = string(f"kv {i} key", "kv")
        (kind,) = struct.unpack_from("<I", data, at)
        fields.append(Field(at, 4, f"kv {i} ({key}) type", "type"))
        at += 4
        if kind == STRING:
            string(f"kv {i} ({key}) value", "kv")
        elif kind == ARRAY:
            item, count = struct.unpack_from("<IQ", data, at)
            fields.append(Field(at, 4, f"kv {i} ({key}) item type", "type"))
            fields.append(Field(at + 4, 8, f"kv {i} ({key}) count", "kv"))
            at += 12
            for j in range(count):
                if item == STRING:
                    string(f"kv {i} ({key}) item {j}", "kv", record=j < 3)
                else:
                    if j < 3:
                        fields.append(Field(at, _SIZES[item], f"kv {i} ({key}) item {j}", "kv"))
                    at += _SIZES[item]
        else:
            fields.append(Field(at, _SIZES[kind], f"kv {i} ({key}) value", "kv"))
            at += _SIZES[kind]
        bounds.append(at)
    for i in range(n_tensors):
        name = string(f"tensor {i} name", "tensor")
        (n_dims,) = struct.unpack_from("<I", data, at)
        fields.append(Field(at, 4, f"tensor {i} ({name}) dimension count", "tensor"))
        at += 4
        for d in range(n_dims):
            fields.append(Field(at, 8, f"tensor {i} ({name}) dimension {d}", "tensor"))
            at += 8
        fields.append(Field(at, 4, f"tensor {i} ({name}) type", "tensor"))
        fields.append(Field(at + 4, 8, f"tensor {i} ({name}) offset", "tensor"))
        at += 12
        bounds.append(at)
    start = -(-at // 32) * 32
    return fields, sorted(set(bounds + [start, len(data) - 1])), start


NUMBERS = [0, 1, -1, 2**31, 2**31 - 1, 2**32 - 1, 2**63, 2**64 - 1]


@dataclass(frozen=True)
class Patch:
    """Bytes written over the file at `at` (a field rewritten, a bit flipped)."""

    at: int
    data: bytes
    what: str


@dataclass(frozen=True)
class Flip:
    """One bit of the file flipped."""

    at: int
    bit: int
    what: str


@dataclass(frozen=True)
class Cut:
    """The file ends at `at`."""

    at: int
    what: str


def encoded(value: int, size: int) -> bytes:
    return (value % (1 << (8 * size))).to_bytes(size, "little")


def gguf_mutations(fields: list[Field], bounds: list[int], data_start: int, size: int) -> st.SearchStrategy:
    groups = {g: [f for f in fields if f.group == g] for g in ("counts", "kv", "type", "tensor")}

    @st.composite
    def rewrite(draw):
        field = draw(st.sampled_from(groups[draw(st.sampled_from(sorted(groups)))]))
        if field.group == "type":
            value = draw(st.sampled_from([*range(13), 13, 99]))  # every GGUF type, and two that are not
        else:
            value = draw(st.sampled_from(NUMBERS) | st.integers(0, 2 ** (8 * field.size) - 1))
        return Patch(field.at, encoded(value, field.size), f"{field.what} = {value}")

    @st.composite
    def cut(draw):
        at = max(0, draw(st.sampled_from(bounds)) + draw(st.integers(-2, 2)))
        return Cut(at, f"cut at byte {at}")

    @st.composite
    def flip(draw):
        at = draw(st.integers(0, data_start + 4096) | st.integers(0, size - 1))
        bit = draw(st.integers(0, 7))
        return Flip(at, bit, f"bit {bit} of byte {at} flipped")

    return st.one_of(rewrite(), cut(), flip())


class Scratch:
    """One working copy of a large file, mutated in place for each case and restored after it."""

    def __init__(self, original: Path, copy: Path):
        self.original = original.read_bytes()
        self.path = copy
        copy.write_bytes(self.original)

    def apply(self, mutation) -> None:
        with open(self.path, "r+b") as f:
            if isinstance(mutation, Cut):
                f.truncate(mutation.at)
            elif isinstance(mutation, Flip):
                f.seek(mutation.at)
                f.write(bytes([self.original[mutation.at] ^ (1 << mutation.bit)]))
            else:
                f.seek(mutation.at)
                f.write(mutation.data)

    def restore(self, mutation) -> None:
        with open(self.path, "r+b") as f:
            if isinstance(mutation, Cut):
                f.seek(mutation.at)
                f.write(self.original[mutation.at :])
            else:
                size = len(mutation.data) if isinstance(mutation, Patch) else 1
                f.seek(mutation.at)
                f.write(self.original[mutation.at : mutation.at + size])


# --- a model folder, file by file ---------------------------------------------------------------------

VALUES = [0, -1, 2**31, 2**63, -(2**63), 1.5, 1e308, "text", None, True, [], {}, [1, 2, 3]]
DELETE = "<deleted>"
CONFIG_KEYS = [
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "vocab_size", "rms_norm_eps", "max_position_embeddings", "rope_theta", "tie_word_embeddings", "head_dim",
    "model_type", "rope_scaling", "quantization", "sliding_window", "partial_rotary_factor",
]  # fmt: skip
TOKENIZER_PARTS = [
    ("model",), ("model", "vocab"), ("model", "merges"), ("model", "type"), ("added_tokens",),
    ("added_tokens", 0, "id"), ("added_tokens", 0, "content"), ("pre_tokenizer",), ("normalizer",),
    ("decoder",), ("post_processor",),
]  # fmt: skip
TOKENIZER_VALUES = VALUES + [
    {"type": "Nope"},
    {"type": "Replace", "pattern": {"Regex": "("}, "content": "x"},
    {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False},
    ["a b"] * 3,
    [["a", "zz"]],
    {"a": 2**63},
]


@st.composite
def templates(draw) -> str:
    """Jinja built from pieces that each cost little alone and much when looped or nested."""
    n = st.sampled_from([0, 3, 1000, 100000, 10**6, 10**9])

    def block(depth: int) -> str:
        kinds = ["text", "set", "call", "expr"] + (["loop", "loop"] if depth < 3 else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "loop":
            body = "".join(block(depth + 1) for _ in range(draw(st.integers(1, 2))))
            return f"{{% for i{depth} in range({min(draw(n), 100000)}) %}}{body}{{% endfor %}}"
        if kind == "text":
            return "x" * draw(st.sampled_from([1, 1000]))
        if kind == "set":
            return draw(
                st.sampled_from(
                    ["{% set ns.s = ns.s + ns.s %}", "{% set ns.s = ns.s ~ ns.s %}", "{% set ns.n = ns.n * ns.n %}"]
                )
            )
        if kind == "call":
            return f"{{{{ m({draw(st.sampled_from([1, 10, 25, 60]))}) }}}}"
        expr = draw(
            st.sampled_from(
                [
                    "'ab' * {n}", "2 ** {n}", "messages|tojson(indent={n})", "ns.s|length", "range({n})|list|join(',')",
                    "'%0{n}d' % 1", "ns.s|center({n})", "'{{:{n}}}'.format(1)", "ns.s|replace('', ns.s)",
                    "ns.s.ljust({n})", "(ns.s ~ '\\n')|indent({n})", "[ns.s] * {n}", "messages[{n}]",
                ]
            )
        )  # fmt: skip
        return "{{ " + expr.format(n=draw(n)) + " }}"

    prefix = (
        "{% set ns = namespace(s='xy', n=3) %}"
        "{% macro m(n) %}{% if n > 0 %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}"
    )
    chatml = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    return prefix + "".join(block(0) for _ in range(draw(st.integers(1, 3)))) + chatml


@dataclass(frozen=True)
class FolderMutation:
    file: str
    how: str  # "set", "delete", "cut", "flip", "header-length", "template", "tensor"
    path: tuple = ()
    value: object = None

    def __str__(self) -> str:
        return f"{self.file}: {self.how} {'.'.join(map(str, self.path))} {str(self.value)[:80]}".strip()


def folder_mutations() -> st.SearchStrategy[FolderMutation]:
    config = st.builds(
        FolderMutation,
        st.just("config.json"),
        st.sampled_from(["set", "set", "delete"]),
        st.sampled_from(CONFIG_KEYS).map(lambda k: (k,)),
        st.sampled_from(VALUES),
    )
    tokenizer = st.builds(
        FolderMutation,
        st.just("tokenizer.json"),
        st.sampled_from(["set", "set", "delete"]),
        st.sampled_from(TOKENIZER_PARTS),
        st.sampled_from(TOKENIZER_VALUES),
    )
    template = st.builds(
        FolderMutation, st.just("tokenizer_config.json"), st.just("template"), st.just(()), templates()
    )
    specials = st.builds(
        FolderMutation,
        st.just("tokenizer_config.json"),
        st.just("set"),
        st.sampled_from([("bos_token",), ("eos_token",), ("eos_token", "content"), ("chat_template",)]),
        st.sampled_from(VALUES + ["<|im_end|>", "<|nope|>", [{"name": "default", "template": 5}]]),
    )
    header = st.builds(
        FolderMutation,
        st.just("model.safetensors"),
        st.just("set"),
        st.tuples(st.integers(0, 40), st.sampled_from(["dtype", "shape", "data_offsets", None])),
        st.sampled_from(VALUES + ["F64", "I8", "F8_E4M3", [2**62, 2], [-1, 4], [0, 2**64]]),
    )
    length = st.builds(
        FolderMutation, st.just("model.safetensors"), st.just("header-length"), st.just(()), st.sampled_from(NUMBERS)
    )
    raw = st.builds(
        FolderMutation,
        st.sampled_from(["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"]),
        st.sampled_from(["cut", "flip"]),
        st.just(()),
        st.floats(0, 1),  # where, as a share of the file (a cut inside the safetensors header is most telling)
    )
    tensor = st.builds(
        FolderMutation,
        st.just("model.safetensors"),
        st.just("tensor"),
        st.integers(0, 80).map(lambda i: (i,)),
        st.sampled_from(TENSOR_CHANGES),
    )
    return st.one_of(config, tokenizer, template, specials, header, length, raw, tensor)


# A tensor replaced by another that a well-formed header describes (mx.save_safetensors writes it), so
# the header checks pass and what is tried is the loader's trust in shapes, dtypes and names.
TENSOR_CHANGES = [
    "flatten", "transpose", "zero width", "zero rows", "half width", "drop", "float16", "int32", "uint8",
    "stray beside it", "moved to layer 99",
]  # fmt: skip


def change_tensor(path: Path, index: int, change: str) -> None:
    import mlx.core as mx

    weights = mx.load(str(path))
    name = sorted(weights)[index % len(weights)]
    w = weights.pop(name)
    stem, suffix = name.rsplit(".", 1)
    changed = {
        "flatten": lambda: {name: w.reshape(-1)},
        "transpose": lambda: {name: w.T if w.ndim == 2 else w.reshape(1, -1)},
        "zero width": lambda: {name: w[..., :0]},
        "zero rows": lambda: {name: w[:0]},
        "half width": lambda: {name: w[..., : max(1, w.shape[-1] // 2)]},
        "drop": lambda: {},
        "float16": lambda: {name: w.astype(mx.float16)},
        "int32": lambda: {name: w.astype(mx.int32)},
        "uint8": lambda: {name: w.astype(mx.uint8)},
        "stray beside it": lambda: {name: w, f"{stem}_stray.{suffix}": w},
        "moved to layer 99": lambda: {name.replace("layers.0.", "layers.99.").replace("layers.1.", "layers.99."): w},
    }[change]()
    mx.save_safetensors(str(path), {**weights, **changed})


def _set(tree, path: tuple, value) -> None:
    """Set (or with DELETE, remove) `path` in a JSON tree; a missing step is created."""
    for step in path[:-1]:
        if isinstance(tree, list):
            if not tree or not isinstance(step, int):
                return
            tree = tree[step % len(tree)]
        elif isinstance(tree, dict):
            if not isinstance(tree.get(step), (dict, list)):
                tree[step] = {}
            tree = tree[step]
        else:
            return
    last = path[-1]
    if isinstance(tree, list):
        if tree and isinstance(last, int):
            if value is DELETE:
                del tree[last % len(tree)]
            else:
                tree[last % len(tree)] = value
    elif isinstance(tree, dict):
        if value is DELETE:
            tree.pop(last, None)
        else:
            tree[last] = value


def apply_to_folder(folder: Path, mutation: FolderMutation) -> None:
    path = folder / mutation.file
    data = path.read_bytes()
    if mutation.how == "tensor":
        change_tensor(path, *mutation.path, mutation.value)
    elif mutation.how in ("cut", "flip"):
        at = min(int(mutation.value * len(data)), len(data) - 1)
        if mutation.file == "model.safetensors" and mutation.value < 0.5:
            at = min(at, 8 + struct.unpack_from("<Q", data)[0])  # mostly inside the header
        path.write_bytes(data[:at] if mutation.how == "cut" else data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :])
    elif mutation.how == "header-length":
        path.write_bytes(encoded(mutation.value, 8) + data[8:])
    elif mutation.file == "model.safetensors":
        n = struct.unpack_from("<Q", data)[0]
        header = json.loads(data[8 : 8 + n])
        names = sorted(k for k in header if k != "__metadata__")
        index, key = mutation.path
        name = names[index % len(names)]
        if key is None:
            header[name] = mutation.value
        else:
            header[name][key] = mutation.value
        raw = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    else:
        tree = json.loads(data)
        if mutation.how == "template":
            tree["chat_template"] = mutation.value
        else:
            _set(tree, mutation.path, DELETE if mutation.how == "delete" else mutation.value)
        path.write_text(json.dumps(tree))
