"""Shared fixtures: the real default model, golden data, and tiny random models."""

import json
import os
from pathlib import Path

import pytest
from code_paths import PATHS, running_path

import model  # noqa: F401  (first: gives MLX OpenBLAS before mlx loads)

GOLDEN = Path(__file__).parent / "golden"

# --- parallel workers (pytest-xdist: `make test` runs `-n auto`) --------------------------------


def pytest_configure(config):
    """Give each xdist worker its share of the cores before it starts (the workers inherit this env).

    OpenBLAS and the SIMD kernel otherwise take a thread per core in every worker, and the PyPI
    OpenBLAS's threads spin while they wait: the oversubscription `share_of_cores` exists for in
    the ranks of one machine. A value already in the environment is kept."""
    workers = len(getattr(config.option, "tx", None) or ())
    if workers > 1 and "PYTEST_XDIST_WORKER" not in os.environ:
        from model.distributed.group import share_of_cores

        for key, value in share_of_cores(workers).items():
            os.environ.setdefault(key, value)


# --- the two code paths (model.compute_path; see tests/code_paths.py) ---------------------------


@pytest.fixture(params=PATHS)
def code_path(request):
    with running_path(request.param) as path:
        yield path


@pytest.fixture(scope="module", params=PATHS)
def module_code_path(request):
    with running_path(request.param) as path:
        yield path


@pytest.hookimpl(tryfirst=True)  # before `-m` reads the marks
def pytest_collection_modifyitems(config, items):
    """Mark every test run per path, so `pytest -m code_path` selects them (the GPU check does)."""
    for item in items:
        if {"code_path", "module_code_path"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.code_path)


@pytest.fixture(scope="session", autouse=True)
def private_config_dir(tmp_path_factory):
    """No test reads or writes the developer's own settings file: the config dir is a fresh one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
        yield


@pytest.fixture(scope="session")
def golden_tokenize():
    return json.loads((GOLDEN / "smollm2-tokenize.json").read_text())


@pytest.fixture(scope="session")
def golden_greedy():
    return json.loads((GOLDEN / "smollm2-greedy.json").read_text())


@pytest.fixture(scope="session")
def default_model():
    """The default model, float32 layout (the CPU default)."""
    from model.loading.loader import load_model

    return load_model(None, layout="float32")


@pytest.fixture(scope="session")
def default_gguf_path():
    from model.loading.default_model import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory, default_gguf_path):
    """A folder with a tiny random model that uses the default model's tokenizer and chat template."""
    from tiny_models import write_tiny_chat_folder

    return str(write_tiny_chat_folder(tmp_path_factory.mktemp("tiny-chat"), default_gguf_path))
