"""The API with a fake model behind it, through OpenAI's own Python client: shapes, errors, auth, the line.

What the model says is `test_serve_model.py`'s subject; here the fake (tests/fake_backend.py)
makes each reply predictable, so every field the client reads can be checked exactly.
"""

import json
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from fake_backend import ALTERNATIVES, MODEL_ID, FakeBackend, prompt_words, serving

from chat.api.backend import ApiMessage, ServedRequest
from chat.api.served_store import ServedStore
from chat.store import Store

HELLO = [{"role": "user", "content": "one two three four"}]
ECHO = "echo: one two three four"


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)


def post(url: str, body: bytes, headers: dict = None) -> tuple[int, dict]:
    """A raw POST to /chat/completions: (status, JSON body), for bodies the client would not send."""
    request = urllib.request.Request(
        f"{url}/chat/completions", data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_models_lists_the_model_and_a_reply_has_openais_shape():
    backend = FakeBackend()
    with serving(backend) as (url, _):
        api = client(url)
        assert [m.id for m in api.models.list().data] == [MODEL_ID]
        reply = api.chat.completions.create(model=MODEL_ID, messages=HELLO)
    assert reply.object == "chat.completion" and reply.model == MODEL_ID and reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", ECHO, "stop")
    assert choice.logprobs is None
    words = prompt_words(ServedRequest(messages=(ApiMessage(role="user", content=HELLO[0]["content"]),)))
    assert reply.usage.prompt_tokens == len(words)
    assert reply.usage.completion_tokens == 5 and reply.usage.total_tokens == len(words) + 5
    assert reply.usage.prompt_tokens_details.cached_tokens == 0


def test_streamed_chunks_join_to_the_same_text_and_end_with_done():
    backend = FakeBackend()
    with serving(backend) as (url, _):
        api = client(url)
        chunks = list(
            api.chat.completions.create(
                model=MODEL_ID, messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
        whole = api.chat.completions.create(model=MODEL_ID, messages=HELLO)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content == ECHO
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5  # include_usage: last, no choices
    assert len({c.id for c in chunks}) == 1


def test_raw_stream_is_server_sent_events_ending_in_done():
    backend = FakeBackend()
    with serving(backend) as (url, _):
        body = json.dumps({"model": "x", "messages": HELLO, "stream": True}).encode()
        request = urllib.request.Request(f"{url}/chat/completions", data=body)
        with urllib.request.urlopen(request, timeout=30) as response:
            kind = response.headers["content-type"]
            raw = response.read().decode()
    assert kind.startswith("text/event-stream")
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_logprobs_give_the_chosen_token_and_the_top_ones_asked_for():
    backend = FakeBackend()
    with serving(backend) as (url, _):
        api = client(url)
        reply = api.chat.completions.create(model=MODEL_ID, messages=HELLO, logprobs=True, top_logprobs=20)
        streamed = api.chat.completions.create(
            model=MODEL_ID, messages=HELLO, logprobs=True, top_logprobs=3, stream=True
        )
        stream_entries = [
            e for c in streamed if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content
        ]
    content = reply.choices[0].logprobs.content
    assert [e.token for e in content] == ["echo:", " one", " two", " three", " four"]
    for i, e in enumerate(content):
        assert e.logprob == pytest.approx(-0.1 * (i + 1))
        assert e.bytes == list(e.token.encode())
        assert len(e.top_logprobs) == 20
        assert [t.token for t in e.top_logprobs] == [e.token, *ALTERNATIVES[:19]]
        assert [t.logprob for t in e.top_logprobs] == pytest.approx(
            [e.logprob, *(e.logprob - 1 - k for k in range(19))]
        )
    assert [(e.token, len(e.top_logprobs)) for e in stream_entries] == [(e.token, 3) for e in content]


def test_an_extending_request_reports_what_the_cache_already_held():
    backend = FakeBackend()
    with serving(backend) as (url, _):
        api = client(url)
        first = api.chat.completions.create(model=MODEL_ID, messages=HELLO)
        extended = [*HELLO, {"role": "assistant", "content": ECHO}, {"role": "user", "content": "five"}]
        second = api.chat.completions.create(model=MODEL_ID, messages=extended)
    # The fake's cache held the first prompt and its reply: all of that is cached now.
    assert second.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens + 5
    assert second.usage.prompt_tokens == first.usage.prompt_tokens + 5 + 2 + 1


def test_sampling_fields_reach_the_backend_and_max_tokens_cuts_the_reply():
    seen = []
    backend = FakeBackend()
    answer = backend.answer
    backend.answer = lambda request, cancel: (seen.append(request), (yield from answer(request, cancel)))[1]
    with serving(backend) as (url, _):
        api = client(url)
        reply = api.chat.completions.create(
            model=MODEL_ID, messages=HELLO, temperature=0.7, top_p=0.9, seed=3, max_completion_tokens=2,
            extra_body={"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.2},
        )  # fmt: skip
        legacy = api.chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=3)
    s = seen[0].settings
    assert (s.temperature, s.top_p, s.seed, s.max_tokens, s.top_k, s.min_p, s.repetition_penalty) == (
        0.7, 0.9, 3, 2, 40, 0.05, 1.2,
    )  # fmt: skip
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == ("echo: one", "length")
    assert seen[1].settings.max_tokens == 3 and legacy.usage.completion_tokens == 3


def test_stop_strings_cut_the_reply_before_them_streamed_or_not():
    backend = FakeBackend()
    with serving(backend) as (url, _):
        api = client(url)
        whole = api.chat.completions.create(model=MODEL_ID, messages=HELLO, stop=["hree", "zzz"], logprobs=True)
        # Split over two tokens (" two", " three"): " two" is held back until it is known to start the stop.
        chunks = api.chat.completions.create(model=MODEL_ID, messages=HELLO, stop=" two th", stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (whole.choices[0].message.content, whole.choices[0].finish_reason) == ("echo: one two t", "stop")
    assert [e.token for e in whole.choices[0].logprobs.content] == ["echo:", " one", " two", " three"]
    assert streamed == "echo: one"
    assert backend.ends[-1].finish_reason == "cancelled"  # the model was stopped there, not run to its end


BAD_BODIES = [
    (b"{not json", None, "invalid_json"),
    (b"[1, 2]", None, "invalid_json"),
    (json.dumps({"model": "x"}).encode(), "messages", None),
    (json.dumps({"model": "x", "messages": "hi"}).encode(), "messages", None),
    (json.dumps({"model": "x", "messages": []}).encode(), "messages", None),
    (json.dumps({"model": "x", "messages": ["hi"]}).encode(), "messages[0]", None),
    (json.dumps({"model": "x", "messages": [{"role": "wizard", "content": "hi"}]}).encode(), "messages[0].role", None),
    (json.dumps({"model": "x", "messages": [{"role": "user", "content": 3}]}).encode(), "messages[0].content", None),
    (json.dumps({"model": "x", "messages": [{"role": "assistant", "content": "hi"}]}).encode(), "messages", None),
    (json.dumps({"messages": HELLO, "temperature": 2.5}).encode(), "temperature", None),
    (json.dumps({"messages": HELLO, "temperature": "hot"}).encode(), "temperature", None),
    (json.dumps({"messages": HELLO, "temperature": True}).encode(), "temperature", None),
    (json.dumps({"messages": HELLO, "top_p": 0}).encode(), "top_p", None),
    (json.dumps({"messages": HELLO, "max_tokens": 0}).encode(), "max_tokens", None),
    (json.dumps({"messages": HELLO, "max_tokens": 2.5}).encode(), "max_tokens", None),
    (json.dumps({"messages": HELLO, "logprobs": True, "top_logprobs": 21}).encode(), "top_logprobs", None),
    (json.dumps({"messages": HELLO, "top_logprobs": 2}).encode(), "top_logprobs", None),
    (json.dumps({"messages": HELLO, "n": 2}).encode(), "n", None),
    (json.dumps({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}).encode(), "stop", None),
    (json.dumps({"messages": HELLO, "seed": "x"}).encode(), "seed", None),
    (json.dumps({"messages": HELLO, "presence_penalty": 1}).encode(), "presence_penalty", None),
]


@pytest.fixture(scope="module")
def one_server():
    """One server for the many malformed bodies: (its URL, its fake)."""
    backend = FakeBackend()
    with serving(backend) as (url, _):
        yield url, backend


@pytest.mark.parametrize("body,param,code", BAD_BODIES, ids=[b[0][:40].decode() for b in BAD_BODIES])
def test_a_malformed_body_is_a_400_in_openais_shape_and_the_server_goes_on(one_server, body, param, code):
    url, backend = one_server
    asked = len(backend.asked)
    status, answer = post(url, body)
    after = client(url).chat.completions.create(model=MODEL_ID, messages=HELLO)
    assert status == 400, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code) and error["message"]
    assert after.choices[0].message.content == ECHO
    assert backend.asked[asked:] == [HELLO[0]["content"]]  # the bad request never reached the model


def test_the_openai_client_sees_a_400_as_bad_request_and_a_refusal_too():
    backend = FakeBackend()
    with serving(backend) as (url, _):
        api = client(url)
        with pytest.raises(openai.BadRequestError) as bad:
            api.chat.completions.create(model=MODEL_ID, messages=[{"role": "wizard", "content": "hi"}])
        with pytest.raises(openai.BadRequestError) as refused:
            api.chat.completions.create(
                model=MODEL_ID, messages=[{"role": "user", "content": "refuse me"}], stream=True
            )
        assert api.chat.completions.create(model=MODEL_ID, messages=HELLO).choices[0].message.content == ECHO
    assert bad.value.status_code == 400 and "wizard" in bad.value.message
    assert "refuses" in refused.value.message


def test_an_unknown_path_is_a_404_in_openais_shape():
    with serving(FakeBackend()) as (url, _):
        request = urllib.request.Request(f"{url}/completions", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 404 and "/v1/chat/completions" in json.loads(error.value.read())["error"]["message"]


def test_with_an_api_key_a_request_needs_it():
    backend = FakeBackend()
    with serving(backend, api_key="sesame") as (url, _):
        with pytest.raises(openai.AuthenticationError) as wrong:
            client(url, "open").chat.completions.create(model=MODEL_ID, messages=HELLO)
        with pytest.raises(openai.AuthenticationError):
            client(url, "open").models.list()
        status, body = post(url, json.dumps({"messages": HELLO}).encode())  # no header at all
        right = client(url, "sesame").chat.completions.create(model=MODEL_ID, messages=HELLO)
    assert wrong.value.status_code == 401 and status == 401 and body["error"]["code"] == "invalid_api_key"
    assert right.choices[0].message.content == ECHO
    assert backend.asked == [HELLO[0]["content"]]


def test_a_client_that_disconnects_mid_stream_stops_the_reply_within_a_step():
    backend = FakeBackend(delay=0.02)
    long = [{"role": "user", "content": " ".join(f"w{i}" for i in range(300))}]
    with serving(backend) as (url, line):
        api = client(url)
        stream = api.chat.completions.create(model=MODEL_ID, messages=long, stream=True, max_tokens=300)
        read = 0
        for chunk in stream:
            read += bool(chunk.choices and chunk.choices[0].delta.content)
            if read == 5:
                break
        stream.close()
        deadline = time.monotonic() + 10
        while line.answered < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        after = api.chat.completions.create(model=MODEL_ID, messages=HELLO)
    end = backend.ends[0]
    assert end.finish_reason == "cancelled"
    # Stopped within a step or two of the disconnect (a few more were in flight), far from the 300 asked for.
    assert 5 <= len(backend.sent[0]) <= 5 + 10, len(backend.sent[0])
    # The cache held the prompt and exactly the words generated, so the next prompt shares just its start.
    assert after.usage.prompt_tokens_details.cached_tokens == 1  # "<user>"


def test_clients_at_once_are_answered_one_after_the_other_in_the_order_they_came():
    backend = FakeBackend()
    backend.gate.clear()
    replies = {}

    def ask(name):
        api = client(url)
        replies[name] = api.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": name}])

    with serving(backend) as (url, line):
        threads = [threading.Thread(target=ask, args=(name,)) for name in ("first", "second", "third")]
        threads[0].start()
        assert backend.answering.wait(10)  # the first holds the model
        for waiting, thread in enumerate(threads[1:], 1):
            thread.start()
            _wait_for(lambda n=waiting: line.queued == n)  # the others wait in the line, second before third
        backend.gate.set()
        for thread in threads:
            thread.join(30)
    assert backend.asked == ["first", "second", "third"]
    assert {n: r.choices[0].message.content for n, r in replies.items()} == {
        "first": "echo: first", "second": "echo: second", "third": "echo: third",
    }  # fmt: skip


def test_a_full_line_answers_429_and_the_waiting_requests_still_complete():
    backend = FakeBackend()
    backend.gate.clear()
    results = []

    def ask(text):
        results.append(
            client(url).chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": text}])
        )

    with serving(backend, waiting=1) as (url, line):
        running = threading.Thread(target=ask, args=("running",))
        running.start()
        assert backend.answering.wait(10)
        waiting = threading.Thread(target=ask, args=("waiting",))
        waiting.start()
        _wait_for(lambda: line.queued == 1)
        with pytest.raises(openai.RateLimitError) as full:
            client(url).chat.completions.create(model=MODEL_ID, messages=HELLO)
        backend.gate.set()
        running.join(30)
        waiting.join(30)
    assert full.value.status_code == 429 and full.value.body["code"] == "queue_full"
    assert full.value.response.headers["retry-after"] == "1"
    assert sorted(r.choices[0].message.content for r in results) == ["echo: running", "echo: waiting"]
    assert backend.asked == ["running", "waiting"]


def test_a_waiting_client_that_leaves_is_never_answered():
    backend = FakeBackend()
    backend.gate.clear()
    with serving(backend) as (url, line):
        running = threading.Thread(
            target=lambda: client(url).chat.completions.create(
                model=MODEL_ID, messages=[{"role": "user", "content": "a"}]
            )
        )
        running.start()
        assert backend.answering.wait(10)
        impatient = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "gone"}])
        time.sleep(0.3)  # the server sees the disconnect
        backend.gate.set()
        running.join(30)
        after = client(url).chat.completions.create(model=MODEL_ID, messages=HELLO)
    assert backend.asked == ["a", HELLO[0]["content"]] and after.choices[0].message.content == ECHO


def test_served_requests_are_saved_marked_as_served_and_an_extension_joins_its_conversation(tmp_path):
    store = Store(tmp_path / "chats.db")
    saver = ServedStore(store, "fake", {"sampling": {}})
    backend = FakeBackend()
    with serving(backend, on_done=saver.save) as (url, line):
        api = client(url)
        system = {"role": "system", "content": "Be brief."}
        api.chat.completions.create(model=MODEL_ID, messages=[system, *HELLO], user="my-editor")
        more = [system, *HELLO, {"role": "assistant", "content": ECHO}, {"role": "user", "content": "five"}]
        api.chat.completions.create(model=MODEL_ID, messages=more, user="my-editor")
        api.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "other"}])
        _wait_for(lambda: line.answered == 3)
    chats = sorted(store.conversations(), key=lambda c: c.id)
    assert [c.title for c in chats] == ["served to my-editor: one two three four", "served: other"]
    info = store.conversation(chats[0].id)
    assert info["system_prompt"] == "Be brief." and info["settings"]["served"] == {"client": "my-editor"}
    path = store.path_to(chats[0].id)
    assert [(m.role, m.content) for m in path] == [
        ("user", "one two three four"), ("assistant", ECHO), ("user", "five"), ("assistant", "echo: five"),
    ]  # fmt: skip
    assert path[1].stats["generated_tokens"] == 5 and path[1].status == "complete"


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
