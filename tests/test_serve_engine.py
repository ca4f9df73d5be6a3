"""The serve backend on the real engine and a tiny random model: what the cache service keeps across requests.

The tiny model speaks the default model's tokenizer and template and replies gibberish, which
is the point: its replies, tokenized again from their text, are not the ids it sampled, so a
backend that rendered a client's history from text would reuse only up to the first such token.
"""

import threading

import pytest

from chat.api.backend import ApiMessage, PromptRead, ReplyEnd, ReplySettings, ReplyStep, ServedRequest
from chat.api.engine_backend import EngineBackend
from model.loading.chat_template import Message
from model.runtime.cache_service import common_prefix
from model.runtime.events import ConversationReset
from model.runtime.settings import EngineOptions

TOKENS = 12


@pytest.fixture(scope="module")
def backend(tiny_chat_model):
    backend = EngineBackend(EngineOptions(model=tiny_chat_model, layout="float32", max_tokens=TOKENS))
    yield backend
    backend.close()


def ask(
    backend: EngineBackend, *messages: tuple[str, str], top: int = 3, **sampling
) -> tuple[PromptRead, list, ReplyEnd]:
    request = ServedRequest(
        messages=tuple(ApiMessage(role=r, content=c) for r, c in messages),
        settings=ReplySettings(top_logprobs=top, **sampling),
    )
    items = list(backend.answer(request, threading.Event()))
    read, steps, end = items[0], items[1:-1], items[-1]
    assert isinstance(read, PromptRead) and isinstance(end, ReplyEnd)
    assert all(isinstance(s, ReplyStep) and len(s.top) == top for s in steps)
    return read, steps, end


def test_a_history_sent_back_as_text_reuses_the_reply_as_sampled_and_a_branch_keeps_the_shared_prefix(backend):
    first = ("user", "Tell me something.")
    read, _, end = ask(backend, first, temperature=1.0, seed=3)  # a seed whose reply retokenizes otherwise
    assert read.cached_tokens == 0 and end.reply_ids
    prompt = backend.text.render([Message("user", first[1])], True)
    assert read.prompt_tokens == len(prompt)
    # Retokenized, the gibberish is other ids: what a text-only history would have reused stops there.
    retokenized = backend.text.render([Message("user", first[1]), Message("assistant", end.text)], False)
    assert retokenized[len(prompt) :][: len(end.reply_ids)] != list(end.reply_ids)

    history = (first, ("assistant", end.text))
    extended, _, _ = ask(backend, *history, ("user", "Go on."))
    # The cache holds the prompt and every reply token but the last shown (a length stop: never fed).
    held = len(prompt) + len(end.reply_ids) - (end.finish_reason == "length")
    assert extended.cached_tokens == held
    branched, steps, branch_end = ask(backend, *history, ("user", "Something else, please."))
    # Rolled back to the prefix the two requests share (the reply, its end and the next user header), no further.
    said = [Message("user", first[1]), Message("assistant", end.text, token_ids=end.reply_ids)]
    go_on, other = (
        backend.text.render([*said, Message("user", u)], True) for u in ("Go on.", "Something else, please.")
    )
    assert branched.cached_tokens == common_prefix(go_on, other) > held

    # The branch answered from the kept prefix is the branch answered from an empty cache.
    backend.engine.reset()
    backend.reader.until(ConversationReset)
    fresh, fresh_steps, fresh_end = ask(backend, *history, ("user", "Something else, please."))
    assert fresh.cached_tokens == 0 and fresh.prompt_tokens == branched.prompt_tokens
    assert fresh_end.reply_ids == branch_end.reply_ids
    for ours, theirs in zip(steps, fresh_steps):
        assert ours.logprob == pytest.approx(theirs.logprob, abs=1e-4)
