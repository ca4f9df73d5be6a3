"""Take the README's picture of a branch: the default model's reply forked at a token, at 140x45.

"What is the capital of France?" gets "The capital of France is Paris."; in confidence
colouring (F9) the cursor goes to `·Paris`, Enter forks the reply to that step's
runner-up, and the model goes on from it. The picture shows the forked reply with the
cursor on the forced token (its top-k at the time, the pick), and `‹ 2/2 ›` under the
message: ← goes back to the first reply. Writes assets/branches.svg (Textual's own
screenshot) and assets/branches.png when Chromium is installed (headless, the renderer
a browser viewing the SVG uses; rsvg-convert squeezes the terminal's spaces).
"""

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import model  # noqa: E402,F401  (picks OpenBLAS before mlx loads)
from chat.app import GlasschatApp  # noqa: E402
from chat.widgets.confidence import ConfidenceText  # noqa: E402
from model.runtime.settings import EngineOptions  # noqa: E402
from scripts.svg_to_png import write_png  # noqa: E402

QUESTION, AT = "What is the capital of France?", " Paris"


async def settle(pilot) -> None:
    await pilot.pause(0.5)
    while pilot.app.chat.busy:
        await pilot.pause(0.2)


async def shoot(svg: Path) -> None:
    app = GlasschatApp(EngineOptions(max_tokens=60))
    async with app.run_test(size=(140, 45)) as pilot:
        while not app.chat.ready:
            await pilot.pause(0.2)
        app.query_one("#prompt").insert(QUESTION)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("f9")
        view = app.query_one(ConfidenceText)
        at = next(i for i, s in enumerate(view.steps) if s.text == AT)
        view.focus()  # the cursor on the first token, its pick on the runner-up
        await pilot.press(*["right"] * at, "enter")
        await settle(pilot)
        app.query_one(ConfidenceText).focus()
        await pilot.press(*["right"] * at)  # the forced token: what it was picked from
        await pilot.pause(0.5)
        app.save_screenshot(filename=svg.name, path=str(svg.parent))


def main() -> None:
    svg = ROOT / "assets" / "branches.svg"
    asyncio.run(shoot(svg))
    print(f"wrote {svg}")
    write_png(svg)


if __name__ == "__main__":
    main()
