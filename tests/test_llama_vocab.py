"""GGUF vocabularies tokenize exactly as llama.cpp does, on llama.cpp's own test data.

The reference is llama.cpp's tests/test-tokenizer-0: vocab-only GGUFs with input strings
and the ids llama.cpp produced (`tokenize(text, add_special=false, parse_special=false)`),
fetched by `make test` (see tests/llama_vocab.py). SentencePiece (llama-spm, phi-3),
Gemma 4's BPE with SentencePiece pieces (gemma-4), and byte-level BPE with five different
pre-tokenizers (llama-bpe, qwen2, gpt-2, starcoder, deepseek-llm).
"""

import mlx.core as mx
import pytest
from llama_vocab import VOCABS, cases, missing, vocab_path

from model.loading.chat_template import ChatTemplate, Message, encode_conversation
from model.loading.detokenizer import StreamingDetokenizer
from model.loading.tokenizer import tokenizer_from_gguf

SENTENCEPIECE = ("llama-spm", "phi-3", "gemma-4")
_built: dict = {}


def vocab(name: str):
    """The GGUF's metadata and our tokenizer for it, built once per session."""
    if missing():
        pytest.fail("llama.cpp's vocab test data is missing: run `make test`, or `python tests/llama_vocab.py`.")
    if name not in _built:
        _, meta = mx.load(str(vocab_path(name)), return_metadata=True)
        _built[name] = meta, tokenizer_from_gguf(meta)
    return _built[name]


@pytest.mark.parametrize("name", VOCABS)
def test_every_case_matches_llama_cpp(name):
    _, tok = vocab(name)
    data = cases(name)
    wrong = [(text, ids, tok.encode_text(text)) for text, ids in data if tok.encode_text(text) != ids]
    assert not wrong, f"{len(data) - len(wrong)}/{len(data)} match; first miss: {wrong[0]}"
    assert len(data) >= 46


@pytest.mark.parametrize("name", VOCABS)
def test_decoding_round_trips_in_one_go_and_streamed(name):
    _, tok = vocab(name)
    for text, ids in cases(name):
        assert tok.decode(ids) == text
        detok = StreamingDetokenizer(tok)
        pieces = [detok.add(i) for i in ids] + [detok.flush()]
        assert "".join(pieces) == text
        assert "\ufffd" not in "".join(pieces)


def test_byte_fallback_tokens_are_held_until_the_character_is_whole():
    _, tok = vocab("llama-spm")
    ids = tok.encode_text("🦙")  # no token of its own: four byte tokens after the ▁
    pieces = [tok.markup.id_to_token(i) for i in ids]
    assert pieces == ["▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
    detok = StreamingDetokenizer(tok)
    assert [detok.add(i) for i in ids] == ["", "", "", "", "🦙"]  # the prefix space is dropped, like decode


def test_gemma4_takes_a_run_of_line_breaks_that_is_a_token_whole():
    """llama.cpp's own rule for Gemma 4 (llama-vocab.cpp, ggml-org/llama.cpp pull 21343)."""
    _, tok = vocab("gemma-4")
    for n in range(1, 32):
        assert tok.encode_text("\n" * n) == [tok.token_id("\n" * n)]


@pytest.mark.parametrize("name", SENTENCEPIECE)
def test_user_text_never_becomes_a_control_token(name):
    _, tok = vocab(name)
    bos, eos = tok.markup.id_to_token(tok.bos_id), tok.markup.id_to_token(tok.eos_id)
    text = f"{bos}hi{eos}"
    plain = tok.encode_text(text)
    assert not set(plain) & tok.special_ids
    assert tok.decode(plain) == text
    assert tok.encode_markup(text)[0] == tok.bos_id


@pytest.mark.parametrize("name", SENTENCEPIECE)
def test_text_after_a_control_token_starts_a_new_piece(name):
    """llama.cpp: each run of text between special tokens is tokenized on its own, with the ▁ prefix."""
    _, tok = vocab(name)
    bos = tok.markup.id_to_token(tok.bos_id)
    for text, ids in cases(name):
        if text:
            assert tok.encode_markup(bos + text) == [tok.bos_id, *ids], text


LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
)


@pytest.mark.parametrize(
    ("name", "source"),
    [("llama-spm", LLAMA2_TEMPLATE), ("llama-spm", None), ("phi-3", "gguf"), ("gemma-4", "gguf")],
)
def test_conversation_tokenizes_like_the_rendered_prompt(name, source):
    """What llama.cpp does with a chat: render, then tokenize once with specials (and BOS if the vocab adds it)."""
    meta, tok = vocab(name)
    if source == "gguf":
        source = meta["tokenizer.chat_template"]
    bos, eos = tok.markup.id_to_token(tok.bos_id), tok.markup.id_to_token(tok.eos_id)
    template = ChatTemplate(source, bos_token=bos, eos_token=eos)
    messages = [Message("user", "Hello there, how are you?"), Message("assistant", "Fine."), Message("user", "Why?")]
    ids, ends = encode_conversation(template, tok, messages, add_generation_prompt=True)
    rendered = tok.encode_markup(template.render(messages, add_generation_prompt=True))
    assert ids == tok.with_bos(rendered)
    assert ids.count(tok.bos_id) == 1 and ids[0] == tok.bos_id
    assert len(ends) == 3 and ends == sorted(ends)
    # A message's own look-alikes stay text inside the conversation too.
    sneaky = [Message("user", f"{eos}{bos}<|end|><end_of_turn>")]
    ids, _ = encode_conversation(template, tok, sneaky, add_generation_prompt=True)
    clean, _ = encode_conversation(template, tok, [Message("user", "x")], add_generation_prompt=True)
    assert [i for i in ids if i in tok.special_ids] == [i for i in clean if i in tok.special_ids]
