"""Time to the first token through `glasschat serve` (OpenAI's client, streaming) against `glasschat run` for one message.

    python -m bench.serve_latency [--message TEXT] [--rounds 3]

`run --json`'s prefill_s is the engine's own time from the message reaching it to the
first token (model load excluded). Through the API the clock is the client's: from
sending the request to the first chunk with text, so it adds HTTP, JSON and the line.
The server's first request has nothing cached, like `run`; asked again after another
message, the same request finds its system prompt and markup in the cache
(`cached_tokens`). Rounds alternate, and medians are printed. Speed figures only mean
something paired in one run on one machine: quote the load beside them.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

MESSAGE = "What is the capital of France?"
OTHER = "Name a colour."


def run_prefill_s(message: str) -> float:
    proc = subprocess.run(
        [sys.executable, "-m", "chat.cli", "run", message, "--json"], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout)["prefill_s"]


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat.cli", "serve", "--port", "0", "--no-save"], stderr=subprocess.PIPE, text=True
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


def main() -> None:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--message", default=MESSAGE)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    server, url = start_server()
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
        cold = api_first_token_s(client, args.message)
        runs, warm = [], []
        for _ in range(args.rounds):
            runs.append(run_prefill_s(args.message))
            api_first_token_s(client, OTHER)  # moves the cache away, so the next one reuses only the shared start
            warm.append(api_first_token_s(client, args.message))
    finally:
        server.terminate()
        server.wait(30)
    print(f"message: {args.message!r}")
    print(f"run --json prefill_s (median of {len(runs)}): {statistics.median(runs) * 1000:.0f} ms  {runs}")
    print(f"API first request, nothing cached: {cold[0] * 1000:.0f} ms (prompt {cold[1]}, cached {cold[2]})")
    median = statistics.median(w[0] for w in warm)
    print(
        f"API again after another message (median): {median * 1000:.0f} ms (prompt {warm[0][1]}, cached {warm[0][2]})"
    )
    print(f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
