"""Streaming detokenization never emits half a UTF-8 character and adds up to the full decode."""

from model.loading.detokenizer import StreamingDetokenizer

TEXTS = ["plain ascii", "Café naïve résumé", "日本語のテキスト", "emoji 🙂🚀 and 👩‍👩‍👧", "mixed: α→β ≠ γ\n\tdone"]


def test_stream_equals_full_decode(default_model):
    tok = default_model.tokenizer
    for text in TEXTS:
        ids = tok.encode_text(text)
        detok = StreamingDetokenizer(tok)
        pieces = [detok.add(i) for i in ids]
        pieces.append(detok.flush())
        assert "".join(pieces) == text == tok.decode(ids)
        assert all("\ufffd" not in p for p in pieces)


def test_multibyte_characters_are_held_back(default_model):
    tok = default_model.tokenizer
    ids = tok.encode_text("世")
    assert len(ids) > 1  # split across byte tokens: the case that matters
    detok = StreamingDetokenizer(tok)
    assert [detok.add(i) for i in ids] == [""] * (len(ids) - 1) + ["世"]
