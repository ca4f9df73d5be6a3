"""Take the README's picture of `glasschat --serve`: the app answering a request from OpenAI's Python client.

The app runs headless at 140x45 on the default model with its server on a free loopback
port; the client (on a thread of its own) asks a question as a notebook would, with `user`
set and logprobs asked for, then sends the conversation back with one more message, so the
Prefill panel shows the tokens reused from the cache. The Next token view (F5) is open. Writes assets/serve.svg (Textual's own screenshot) and assets/serve.png
(headless Chromium, see scripts/svg_to_png.py).
"""

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

import model  # noqa: E402,F401  (picks OpenBLAS before mlx loads)
from chat.api.app_server import AppServer  # noqa: E402
from chat.api.server import listen  # noqa: E402
from chat.app import GlasschatApp  # noqa: E402
from model.runtime.settings import EngineOptions  # noqa: E402
from scripts.svg_to_png import write_png  # noqa: E402

FIRST = [{"role": "user", "content": "What is the capital of France?"}]
THEN = {"role": "user", "content": "And of Italy? One sentence, please."}


async def main() -> None:
    app = GlasschatApp(EngineOptions(max_tokens=120))
    app.server = AppServer(app, listen("127.0.0.1", 0), "default", api_key=None, waiting=4)
    client = openai.OpenAI(base_url=app.server.url, api_key="unused", max_retries=0, timeout=300)
    async with app.run_test(size=(140, 45)) as pilot:
        while not app.chat.ready:
            await pilot.pause(0.2)
        await app.chat.show_view("topk", True)

        def ask(messages):
            create = client.chat.completions.create
            return create(model="default", messages=messages, user="notebook", logprobs=True, top_logprobs=5)

        first = await asyncio.to_thread(ask, FIRST)
        # The client's history, extended: the cache still holds the first exchange, so only the new part is read.
        said = {"role": "assistant", "content": first.choices[0].message.content}
        reply = await asyncio.to_thread(ask, [*FIRST, said, THEN])
        while app.chat.busy:
            await pilot.pause(0.2)
        await pilot.pause(1.0)
        svg = ROOT / "assets" / "serve.svg"
        app.save_screenshot(filename=svg.name, path=str(svg.parent))
    usage = reply.usage
    print(f"reply: {reply.choices[0].message.content!r}; prompt {usage.prompt_tokens} tokens, ", end="")
    print(f"{usage.prompt_tokens_details.cached_tokens} cached; {usage.completion_tokens} generated")
    print(f"wrote {svg}")
    write_png(svg)


if __name__ == "__main__":
    asyncio.run(main())
