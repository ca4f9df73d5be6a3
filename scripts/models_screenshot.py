"""Take the README's picture of the Models screen, at 140x45, over real files made from the default model.

A temporary Hub cache (in huggingface_hub's own layout) gets the default GGUF and an
MLX 4-bit folder exported from it; a float16 folder is in the recent list. Writes
assets/models.svg (Textual's own screenshot) and assets/models.png when Chromium is
installed (headless, the same renderer as a browser viewing the SVG).
"""

import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import model  # noqa: E402,F401  (first: picks OpenBLAS before mlx loads)
from chat.app import GlasschatApp  # noqa: E402
from chat.user_settings import SettingsFile, UserSettings  # noqa: E402
from model.loading.default_model import default_model_path  # noqa: E402
from model.runtime.settings import EngineOptions  # noqa: E402
from scripts.svg_to_png import write_png  # noqa: E402


def files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in folder.iterdir()}


async def shoot(work: Path, svg: Path) -> None:
    # The tests' helpers import mlx: only after `model` has picked the BLAS.
    import mlx.core as mx
    from gguf_export import export_folder
    from hub_cache import write_cached_repo

    gguf = default_model_path()
    cache = work / "hub"
    os.environ["HF_HUB_CACHE"] = str(cache)
    write_cached_repo(cache, "glasschat-demo/SmolLM2-135M-GGUF", {gguf.name: gguf.read_bytes()})
    write_cached_repo(cache, "glasschat-demo/SmolLM2-135M-mlx-4bit", files(export_folder(gguf, work / "mlx4")))
    recent = export_folder(gguf, work / "SmolLM2-135M-f16", dtype=mx.float16)
    settings = SettingsFile(work / "settings.toml", UserSettings(recent=(str(recent),)))
    app = GlasschatApp(EngineOptions(), settings_file=settings)
    async with app.run_test(size=(140, 45)) as pilot:
        while not app.chat.ready:
            await pilot.pause(0.2)
        await pilot.press("ctrl+l")
        while not getattr(app.screen, "cards", None):
            await pilot.pause(0.2)
        await pilot.pause(0.5)
        app.save_screenshot(filename=svg.name, path=str(svg.parent))


def main() -> None:
    svg = ROOT / "assets" / "models.svg"
    # Under the home folder, so the screen shows ~/... rather than a machine's temporary path.
    with tempfile.TemporaryDirectory(dir=Path.home(), prefix="glasschat-demo-") as work:
        asyncio.run(shoot(Path(work), svg))
    print(f"wrote {svg}")
    write_png(svg)


if __name__ == "__main__":
    main()
