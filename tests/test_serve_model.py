"""`glasschat serve` on the default model, through OpenAI's client, against `glasschat run` and `replay` for the same messages.

The server is the real command in a subprocess on a free loopback port; `run --json` and
`replay --json` are the references: what a request answers and counts must be what a
turn answers and counts.
"""

import json
import math
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import openai
import pytest
from cli_helpers import glasschat

FRANCE = "What is the capital of France?"
ITALY = "And of Italy?"
SPAIN = "And of Spain?"
STORY = "Write a long story about a dragon who learns to sing."
TOP = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, database path) of `glasschat serve --port 0` on the default model."""
    db = tmp_path_factory.mktemp("serve") / "chats.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat.cli", "serve", "--port", "0", "--db", str(db)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines = []
    url = None
    deadline = time.monotonic() + 300
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if found := re.search(r"at (http://\S+/v1)", line):
            url = found.group(1)
    assert url, "".join(lines)
    drain = threading.Thread(target=lambda: [lines.append(x) for x in proc.stderr], daemon=True)
    drain.start()
    yield url, db
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert "Traceback" not in "".join(lines), "".join(lines)


@pytest.fixture(scope="module")
def run_json():
    proc = glasschat("run", FRANCE, "--json", "--show-top", str(TOP))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def replay_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "messages.json"
    path.write_text(json.dumps([FRANCE, ITALY, {"user": SPAIN, "from": 1}]))
    proc = glasschat("replay", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_greedy_reply_and_its_logprobs_equal_run_streamed_or_not(server, run_json):
    url, _ = server
    api = client(url)
    reply = api.chat.completions.create(model="default", messages=[user(FRANCE)], logprobs=True, top_logprobs=TOP)
    chunks = api.chat.completions.create(model="default", messages=[user(FRANCE)], stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reply.choices[0].message.content == run_json["text"] == streamed
    assert reply.choices[0].finish_reason == "stop"
    content = reply.choices[0].logprobs.content
    # run's top-k has a row for every token generated; the end-of-turn token is not content.
    assert len(content) == len(run_json["top_k"]) - 1 == reply.usage.completion_tokens - 1
    for entry, ours in zip(content, run_json["top_k"]):
        assert [t.token for t in entry.top_logprobs] == [text for _id, text, _p in ours]
        for t, (_id, _text, prob) in zip(entry.top_logprobs, ours):
            assert t.logprob == pytest.approx(math.log(prob), abs=1e-3)
        assert (entry.token, entry.logprob) == (entry.top_logprobs[0].token, entry.top_logprobs[0].logprob)  # greedy


def test_an_extending_request_prefills_only_what_is_new_as_a_turn_does_and_a_diverging_one_branches(
    server, replay_json
):
    url, _ = server
    api = client(url)
    first, second, branch = replay_json
    one = api.chat.completions.create(model="default", messages=[user(FRANCE)])
    said = one.choices[0].message.content
    assert said == first["text"]
    history = [user(FRANCE), {"role": "assistant", "content": said}]
    two = api.chat.completions.create(model="default", messages=[*history, user(ITALY)])
    three = api.chat.completions.create(model="default", messages=[*history, user(SPAIN)])
    for reply, turn in ((two, second), (three, branch)):
        usage = reply.usage
        assert reply.choices[0].message.content == turn["text"]
        assert usage.prompt_tokens_details.cached_tokens == turn["reused_tokens"] > 0
        assert usage.prompt_tokens - usage.prompt_tokens_details.cached_tokens == turn["prompt_tokens"]
    # Spain branches after France's reply: the cache went back to the prefix the two share, no further.
    assert three.usage.prompt_tokens_details.cached_tokens >= len(first["token_ids"])


def test_a_client_that_disconnects_stops_the_model_and_the_cache_stays_consistent(server, run_json):
    url, db = server
    api = client(url)
    stream = api.chat.completions.create(model="default", messages=[user(STORY)], stream=True, max_tokens=400)
    read = 0
    for chunk in stream:
        read += bool(chunk.choices and chunk.choices[0].delta.content)
        if read == 3:
            break
    stream.close()
    saved = _saved_reply(db, STORY)
    assert saved["status"] == "cancelled"
    # 400 asked for; the fake's test holds the step count tight, here a loaded machine may read late.
    assert 3 <= saved["stats"]["generated_tokens"] < 3 + 60, saved["stats"]
    again = api.chat.completions.create(model="default", messages=[user(FRANCE)])
    assert again.choices[0].message.content == run_json["text"]


def _saved_reply(db, user_text: str, timeout: float = 60.0) -> dict:
    """The reply saved for the served request whose message was `user_text` (the store is written at its end)."""
    deadline = time.monotonic() + timeout
    query = (
        "SELECT r.status, t.stats, c.title FROM messages u JOIN messages r ON r.parent_id = u.id "
        "JOIN turn_stats t ON t.message_id = r.id JOIN conversations c ON c.id = r.conversation_id "
        "WHERE u.content = ? AND r.role = 'assistant'"
    )
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as connection:
            row = connection.execute(query, (user_text,)).fetchone()
        if row:
            assert row[2].startswith("served")
            return {"status": row[0], "stats": json.loads(row[1])}
        time.sleep(0.1)
    raise AssertionError(f"no reply to {user_text!r} was saved")
