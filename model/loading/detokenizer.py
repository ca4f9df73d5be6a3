"""Token ids to text as they stream, never emitting half a UTF-8 character.

Byte-level BPE splits many characters (CJK, emoji) over several tokens. Bytes
go through an incremental UTF-8 decoder, which holds an incomplete tail back
until the next token completes it.
"""

import codecs


class StreamingDetokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""

    def add(self, token_id: int) -> str:
        """Feed one token; returns the text it completes (possibly empty)."""
        piece = self.decoder.decode(self.tokenizer.token_bytes(token_id), final=False)
        self.text += piece
        return piece

    def flush(self) -> str:
        """End of stream: whatever is held back becomes U+FFFD."""
        piece = self.decoder.decode(b"", final=True)
        self.text += piece
        return piece
