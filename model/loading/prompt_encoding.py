"""A prompt made of template markup, message text and sampled ids, turned into token ids.

llama.cpp renders the chat template and tokenizes the whole string once: control tokens
become ids, and each run of text between them is tokenized as one piece. For a
SentencePiece vocabulary that puts `▁` before each piece, tokenizing the template's
markup and the message separately is wrong where a run crosses from one into the other:
"[INST] " then "Hello" gives `▁[` `INST` `]` `▁` `▁Hello` (two spaces), llama.cpp gives
`▁[` `INST` `]` `▁Hello`. So for those vocabularies the control tokens are found in the
markup alone, and each run between them, markup and message text together, is tokenized
as plain text: message text still never becomes a control token.

Byte-level BPE vocabularies (and SentencePiece ones without the `▁` prefix) tokenize each
part on its own, as before: their pre-tokenizers split at the same places either way for
the templates we run, and a message's ids then stay exactly its plain encoding.
Sampled ids (an assistant reply as it was generated) are kept as they are in both cases.
"""

from typing import Union

Part = tuple[str, Union[str, tuple[int, ...]]]  # ("markup" | "text", str) or ("ids", ids)


def encode_parts(tokenizer, parts: list[Part]) -> tuple[list[int], list[int]]:
    """All ids, and for each part the number of ids up to its end."""
    if getattr(tokenizer, "add_space_prefix", False):
        return _one_pass(tokenizer, parts)
    ids: list[int] = []
    ends: list[int] = []
    for kind, payload in parts:
        if kind == "ids":
            ids += list(payload)
        elif kind == "markup":
            ids += tokenizer.encode_markup(payload)
        else:
            ids += tokenizer.encode_text(payload)
        ends.append(len(ids))
    return ids, ends


def _one_pass(tokenizer, parts: list[Part]) -> tuple[list[int], list[int]]:
    runs: list[Union[str, list[int]]] = []  # text to tokenize as one piece, or ids as they are
    marks: list[tuple[int, int]] = []  # per part: the run it ends in and its end inside that run

    def add_text(text: str) -> None:
        if runs and isinstance(runs[-1], str):
            runs[-1] += text
        elif text:
            runs.append(text)

    for kind, payload in parts:
        if kind == "ids":
            runs.append(list(payload))
        elif kind == "text":
            add_text(payload)
        else:
            for piece in _split_at_control(tokenizer, payload):
                add_text(piece) if isinstance(piece, str) else runs.append(piece)
        last = runs[-1] if runs else None
        marks.append((len(runs) - 1, len(last) if isinstance(last, str) else -1))

    ids: list[int] = []
    starts: list[tuple[int, list[int]]] = []  # per run: where its ids begin, and each id's first character
    for run in runs:
        if isinstance(run, str):
            run_ids, spans = tokenizer.encode_spans(run, markup=False)
            starts.append((len(ids), [s for s, _ in spans]))
            ids += run_ids
        else:
            starts.append((len(ids), [-1] * len(run)))
            ids += run
    ends = []
    for run, end in marks:
        if run < 0:
            ends.append(0)
            continue
        base, firsts = starts[run]
        # A token that starts before the part's end belongs to it (it may run on into the next part).
        ends.append(base + (len(firsts) if end < 0 else sum(1 for s in firsts if s < end)))
    return ids, ends


def _split_at_control(tokenizer, markup: str) -> list[Union[str, list[int]]]:
    """Markup cut at its control tokens: text pieces and [id] for each control token."""
    ids, spans = tokenizer.encode_spans(markup, markup=True)
    out: list[Union[str, list[int]]] = []
    pos = 0
    for token_id, (start, end) in zip(ids, spans):
        if token_id in tokenizer.special_ids:
            out.append(markup[pos:start])
            out.append([token_id])
            pos = end  # past any whitespace the token strips after itself (Phi-3)
    out.append(markup[pos:])
    return out
