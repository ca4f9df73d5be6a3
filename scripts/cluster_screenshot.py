"""Take the README's picture of the Cluster view: the app on the default model split over 2 local ranks, at 140x45.

This process is rank 0 and runs the app (as `glasschat --ranks 2` does); rank 1 is
started on 127.0.0.1. One question, answered with the Cluster view (F10) open.
Writes assets/cluster.svg (Textual's own screenshot) and assets/cluster.png when
Chromium is installed (headless, the same renderer as a browser viewing the SVG).
"""

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import model  # noqa: E402,F401  (first: picks OpenBLAS before mlx loads)
from chat.app import GlasschatApp  # noqa: E402
from model.distributed.group import LocalGroup  # noqa: E402
from model.runtime.settings import EngineOptions  # noqa: E402
from scripts.svg_to_png import write_png  # noqa: E402

QUESTION = "Name three colours of the rainbow."


async def shoot(svg: Path) -> None:
    group = LocalGroup(2, None, "auto")
    try:
        app = GlasschatApp(replace(EngineOptions(max_tokens=40), shard=group.shard))
        async with app.run_test(size=(140, 45)) as pilot:
            while not app.chat.ready:
                await pilot.pause(0.2)
            await app.query_one("#prefill").remove()  # room for the Cluster view beside the others
            await pilot.press("f10")
            app.query_one("#prompt").insert(QUESTION)
            await pilot.press("enter")
            await pilot.pause(0.5)
            while app.chat.busy:
                await pilot.pause(0.2)
            await pilot.pause(1.0)
            app.save_screenshot(filename=svg.name, path=str(svg.parent))
    finally:
        group.close()


def main() -> None:
    svg = ROOT / "assets" / "cluster.svg"
    asyncio.run(shoot(svg))
    print(f"wrote {svg}")
    write_png(svg)


if __name__ == "__main__":
    main()
