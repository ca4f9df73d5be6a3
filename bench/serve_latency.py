"""Time to the first token through `glasschat serve` (OpenAI's client, streaming) against `glasschat run` for one message.

    python -m bench.serve_latency [--message TEXT] [--rounds 3]

`run --json`'s prefill_s is the engine's own time from the message reaching it to the
first token (model load excluded). Through the API the clock is the client's: from
sending the request to the first chunk with text, so it adds HTTP, JSON and the line;
the server's own engine time for the same request (its saved `prefill_s`) is printed
beside it, so the difference is what the API adds. The server's first request has
nothing cached, like `run`; asked again after another message, the same request finds
its system prompt and markup in the cache (`cached_tokens`). `run` goes first, while no
server is up (an idle server's BLAS threads would share the cores). Medians are
printed. Speed figures only mean something paired in one run on one machine: quote the
load beside them.
"""

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MESSAGE = "What is the capital of France?"
OTHER = "Name a colour."


def run_prefill_s(message: str) -> float:
    proc = subprocess.run(
        [sys.executable, "-m", "chat.cli", "run", message, "--json"], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout)["prefill_s"]


def start_server(db: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat.cli", "serve", "--port", "0", "--db", str(db)], stderr=subprocess.PIPE, text=True
    )
    for line in proc.stderr:
        if found := re.search(r"at (http://\S+/v1)", line):
            return proc, found.group(1)
    raise SystemExit("glasschat serve did not start")


def api_first_token_s(client, message: str) -> tuple[float, int, int]:
    """(seconds to the first text chunk, prompt tokens, cached tokens)."""
    start = time.perf_counter()
    first = None
    usage = None
    stream = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": message}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            usage = chunk.usage
    return first, usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens


def engine_prefill_s(db: Path) -> list[float]:
    """Each saved reply's prefill_s, in the order the requests were answered."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT t.stats FROM messages m JOIN turn_stats t ON t.message_id = m.id ORDER BY m.created, m.id"
        ).fetchall()
    return [json.loads(row[0])["prefill_s"] for row in rows]


def main() -> None:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--message", default=MESSAGE)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    runs = [run_prefill_s(args.message) for _ in range(args.rounds)]
    db = Path(tempfile.mkdtemp()) / "served.db"
    server, url = start_server(db)
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
        cold = api_first_token_s(client, args.message)
        warm = []
        for _ in range(args.rounds):
            api_first_token_s(client, OTHER)  # moves the cache away, so the next one reuses only the shared start
            warm.append(api_first_token_s(client, args.message))
        time.sleep(1)  # the last reply is saved once it ends
        engine = engine_prefill_s(db)
    finally:
        server.terminate()
        server.wait(30)
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    print(f"message: {args.message!r}")
    print(f"run --json prefill_s, median of {len(runs)}: {ms(statistics.median(runs))}  ({', '.join(map(ms, runs))})")
    print(f"API, first request, nothing cached: {ms(cold[0])} at the client, {ms(engine[0])} in the engine "
          f"(prompt {cold[1]}, cached {cold[2]})")  # fmt: skip
    again, again_engine = statistics.median(w[0] for w in warm), statistics.median(engine[2::2])
    print(f"API, again after another message, median of {len(warm)}: {ms(again)} at the client, "
          f"{ms(again_engine)} in the engine (prompt {warm[0][1]}, cached {warm[0][2]})")  # fmt: skip
    print(f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
