"""Take the README's screenshot: a real conversation with the default model, at 140x45.

Writes assets/glasschat.svg (Textual's own screenshot) and assets/glasschat.png
(converted with rsvg-convert, from Debian's librsvg2-bin, when it is installed).
"""

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import model  # noqa: E402,F401  (picks OpenBLAS before mlx loads)
from chat.app import GlasschatApp  # noqa: E402
from model.runtime.engine import EngineOptions  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Write a Python function that reverses a string."]


async def main() -> None:
    app = GlasschatApp(EngineOptions(max_tokens=120))
    async with app.run_test(size=(140, 45)) as pilot:
        while not app.chat.ready:
            await pilot.pause(0.2)
        for question in QUESTIONS:
            app.query_one("#prompt").insert(question)
            await pilot.press("enter")
            await pilot.pause(0.5)
            while app.chat.busy:
                await pilot.pause(0.2)
        await pilot.pause(1.0)
        svg = ROOT / "assets" / "glasschat.svg"
        app.save_screenshot(filename=svg.name, path=str(svg.parent))
    print(f"wrote {svg}")
    if shutil.which("rsvg-convert"):
        png = svg.with_suffix(".png")
        subprocess.run(["rsvg-convert", "-w", "1680", str(svg), "-o", str(png)], check=True)
        print(f"wrote {png}")
    else:
        print("rsvg-convert not found (apt-get install librsvg2-bin): PNG not written")


if __name__ == "__main__":
    asyncio.run(main())
