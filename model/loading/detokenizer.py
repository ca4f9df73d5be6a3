"""Token ids to text as they stream, never emitting half a UTF-8 character.

Byte-level BPE splits many characters (CJK, emoji) over several tokens, and
SentencePiece vocabularies spell characters they lack as byte tokens (`<0xE2>`).
Bytes go through an incremental UTF-8 decoder, which holds an incomplete tail
back until the next token completes it. A SentencePiece vocabulary that puts a
`▁` before the text loses that one space again at the start, as a full decode does.
"""

import codecs

from model.loading.tokenizer import TextTokenizer


class StreamingDetokenizer:
    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer = tokenizer
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self._strip_space = tokenizer.add_space_prefix

    def add(self, token_id: int) -> str:
        """Feed one token; returns the text it completes (possibly empty)."""
        return self._emit(self.decoder.decode(self.tokenizer.token_bytes(token_id), final=False))

    def flush(self) -> str:
        """End of stream: whatever is held back becomes U+FFFD."""
        return self._emit(self.decoder.decode(b"", final=True))

    def _emit(self, piece: str) -> str:
        if self._strip_space and piece:
            self._strip_space = False
            piece = piece[1:] if piece.startswith(" ") else piece
        self.text += piece
        return piece
