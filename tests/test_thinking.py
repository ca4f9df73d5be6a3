"""Thinking models: the reply split at </think>, the template's switch, and the cache rolled back (not rebuilt)
when the template drops earlier thinking. The reference prompt is transformers' own apply_chat_template."""

import mlx.core as mx
import pytest
from engine_harness import SyncChat
from tiny_models import ANSWER, CHATML, QWEN3_STYLE, THOUGHT, write_thinking_folder

from model.cache.kv_factory import make_cache
from model.cache.settings import CacheSettings
from model.loading.chat_template import Message, encode_conversation, with_thinking
from model.loading.loader import load_model
from model.runtime import thinking
from model.runtime.branches import ROOT, Turn
from model.runtime.generate import prefill

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("thinking") / "tiny-thinker"
    write_thinking_folder(path)
    return path


@pytest.fixture(scope="module")
def hf_tokenizer(folder):
    """transformers' tokenizer over the same files: its Jinja rendering and its tokenization are the reference."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), chat_template=QWEN3_STYLE)


def reference_ids(hf_tokenizer, messages, thinking=None, generation=True) -> list[int]:
    extra = {} if thinking is None else {"enable_thinking": thinking}
    text = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation, **extra)
    return hf_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_reply_splits_at_its_markers(folder):
    tok = load_model(str(folder)).tokenizer
    found = thinking.markers(tok)
    ids = tok.encode_markup(f"<think>\n{THOUGHT}\n</think>\n\n{ANSWER}")
    thought = thinking.split_reply(ids, found, tok)
    assert (thought.text, thought.answer_ids) == (THOUGHT, tuple(tok.encode_text(ANSWER)))
    assert thought.ids == tuple(tok.encode_text(THOUGHT))
    # Stopped while thinking: all of it is thinking. A prompt that opened the block: no <think> in the reply.
    assert thinking.split_reply(ids[:3], found, tok).answer_ids == ()
    assert thinking.split_reply(ids[1:], found, tok, inside=True) == thought
    assert thinking.split_reply(tok.encode_text(ANSWER), found, tok) is None
    assert thinking.opens_inside(tok.encode_markup("<|im_start|>assistant\n<think>\n"), found)
    assert not thinking.opens_inside(tok.encode_markup("assistant\n<think>\n\n</think>\n\n"), found)


def test_the_template_keeps_or_drops_thinking_as_for_real_text(folder, hf_tokenizer):
    """Our stand-ins against the template rendered with the real text: same ids, kept or dropped."""
    loaded = load_model(str(folder))
    tok = loaded.tokenizer
    reply = tok.encode_markup(with_thinking(THOUGHT, ANSWER))
    thought = thinking.split_reply(reply, thinking.markers(tok), tok)
    ours = [Message("user", "Hello!"), Message("assistant", ANSWER, tuple(reply), thought)]
    real = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": with_thinking(THOUGHT, ANSWER)}]

    # The last message, after the last user message: kept, as the reply was written.
    ids, _ = encode_conversation(loaded.template, tok, ours, add_generation_prompt=False)
    assert ids == reference_ids(hf_tokenizer, real, generation=False)
    assert tok.token_id("<think>") in ids

    # Once the user writes again, Qwen3's rule drops it; and with thinking off the prompt closes an empty block.
    ours.append(Message("user", "How are you?"))
    real.append({"role": "user", "content": "How are you?"})
    for switch in (None, False):
        ids, _ = encode_conversation(loaded.template, tok, ours, True, switch)
        assert ids == reference_ids(hf_tokenizer, real, switch)
    assert tok.token_id("<think>") not in encode_conversation(loaded.template, tok, ours, True)[0]


def test_the_cache_rolls_back_to_the_reply_and_keeps_the_rest(folder, hf_tokenizer):
    engine = SyncChat(model=str(folder), max_tokens=MAX_TOKENS)
    tok = engine.loaded.tokenizer
    started, tokens, ended = engine.turn("Hello!")
    # The scripted reply: <think> Hmm </think>, a blank line, OK, end of turn.
    assert [t.thinking for t in tokens] == [True, True, True, False, False, False]
    assert (ended.thinking, ended.text) == (THOUGHT, ANSWER)
    assert ended.stats.thinking_tokens == 3 and ended.stats.generated_tokens == 6
    assert "".join(t.text for t in tokens if t.thinking) == THOUGHT
    first_prompt = started.prompt_tokens

    started, tokens, ended = engine.turn("How are you?")
    full = reference_ids(
        hf_tokenizer,
        [
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": with_thinking(THOUGHT, ANSWER)},
            {"role": "user", "content": "How are you?"},
        ],
    )
    # Back to the start of the first reply; prefilled: the reply without its thinking, then the new message.
    assert started.reused_tokens == first_prompt
    assert started.rolled_back_tokens == 5  # <think> Hmm </think> \n\n OK
    assert started.prompt_tokens == len(full) - first_prompt
    answer_and_message = tok.encode_text(ANSWER) + tok.encode_markup("<|im_end|>\n<|im_start|>user\n")
    assert full[first_prompt:][: len(answer_and_message)] == answer_and_message
    assert engine.service.history[: len(full)] == full
    assert ended.stats.reused_tokens == first_prompt and ended.stats.rolled_back_tokens == 5

    # Nothing stale is left: the cache equals one filled from scratch with what it holds.
    held = engine.service.history
    fresh = make_cache(engine.model, CacheSettings())
    mx.eval(prefill(engine.model, fresh, held, 64))
    assert engine.cache.length == fresh.length == len(held)
    for ours, theirs in zip(engine.cache.layers, fresh.layers):
        for a, b in zip(ours.stored(len(held)), theirs.stored(len(held))):
            assert mx.abs(a - b).max().item() < 1e-5


def test_thinking_off_through_the_template(folder, hf_tokenizer):
    engine = SyncChat(model=str(folder), max_tokens=MAX_TOKENS, thinking=False)
    started, tokens, ended = engine.turn("Hello!")
    assert ended.text == ANSWER and ended.thinking == "" and ended.stats.thinking_tokens == 0
    assert not any(t.thinking for t in tokens)
    real = [{"role": "user", "content": "Hello!"}]
    assert engine.service.history[: started.prompt_tokens] == reference_ids(hf_tokenizer, real, False)

    # The prompt's empty <think></think> is not part of the reply: rolled back, the reply prefilled plain.
    started, _, _ = engine.turn("How are you?")
    assert started.rolled_back_tokens == 5  # <think> \n\n </think> \n\n OK
    real += [{"role": "assistant", "content": ANSWER}, {"role": "user", "content": "How are you?"}]
    assert engine.service.history[: started.reused_tokens + started.prompt_tokens] == reference_ids(
        hf_tokenizer, real, False
    )

    engine.update(thinking=None)  # back on: the model thinks again
    assert engine.turn("Why?")[2].stats.thinking_tokens == 3


def test_without_enable_thinking_the_message_carries_no_think(tmp_path):
    write_thinking_folder(tmp_path / "chatml", template=CHATML)
    engine = SyncChat(model=str(tmp_path / "chatml"), max_tokens=MAX_TOKENS, thinking=False)
    assert engine.events[-1].info["thinking"] == "/no_think"
    engine.turn("Hello!")
    assert engine.conversation.tree.get(1).user == "Hello! /no_think"
    assert engine.conversation.messages[0].content == "Hello! /no_think"


def test_a_restored_reply_keeps_its_thinking_apart(folder):
    engine = SyncChat(model=str(folder), max_tokens=MAX_TOKENS)
    _, _, ended = engine.turn("Hello!")
    live = list(engine.service.history)  # the prompt and the reply as sampled: <think>Hmm</think>, no newlines
    # As a saved chat comes back: the reply's text and ids only; its thinking is split from the ids again.
    saved = Turn(turn_id=1, parent=ROOT, user="Hello!", reply_ids=ended.reply_ids, reply_text=ended.text)
    other = SyncChat(model=str(folder), max_tokens=MAX_TOKENS)
    other.restore(None, [saved], 1)
    assert other.conversation.messages[1].thought.text == THOUGHT
    # The template keeps the last reply's thinking: it is prefilled as it was sampled, not as re-encoded text.
    assert other.service.history[: len(live)] == live
    # The restored cache is the live one: the next turn rolls back and reuses exactly as it did.
    live, restored = engine.turn("How are you?")[0], other.turn("How are you?")[0]
    assert (restored.reused_tokens, restored.prompt_tokens) == (live.reused_tokens, live.prompt_tokens)
