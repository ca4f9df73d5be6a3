"""Take the README's screenshot: a real conversation with the default model, at 140x45.

The prompt is picked from the welcome screen with its key ("1", Enter), as a new
user would: a haiku, whose lines show that a reply keeps its line breaks.
Writes assets/glasschat.svg (Textual's own screenshot) and assets/glasschat.png,
rendered by headless Chromium when it is installed (`apt-get install chromium`;
rsvg-convert squeezes the terminal's spaces, so it is not used).
"""

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import model  # noqa: E402,F401  (picks OpenBLAS before mlx loads)
from chat.app import GlasschatApp  # noqa: E402
from model.runtime.settings import EngineOptions  # noqa: E402
from scripts.svg_to_png import write_png  # noqa: E402

QUESTIONS = ["1"]  # the welcome's first example: a haiku


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
    write_png(svg)


if __name__ == "__main__":
    asyncio.run(main())
