"""A text file attached to a message: read and checked, written into the message, and found in it again.

The file goes into the message the model reads as a delimited block, before
what the user typed:

    File: notes.txt
    ````
    ...the file's text...
    ````

    What does it say about the budget?

Why this delimiter: a Markdown code fence is what chat models are trained to
read as "verbatim text starts here and ends here", and CommonMark's rule makes it
unambiguous: a fence closes only on a run of backticks at least as long as the
one that opened it, so the fence is made one longer than the longest run in the
file (at least three), and no line of the file can end the block. XML-style tags
(`<file>...</file>`) have no such rule: a file that contains `</file>` (this
module, say) would end its own block. The same rule lets `split_message` find
the blocks again in a saved message exactly as they were written, so the store
keeps the message as the model read it, the attachment's name and text with it.
Files come first and the question last: models answer questions about a long
document better when the question follows it.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

MAX_BYTES = 16 << 20  # more text than the largest cache (2^20 tokens) holds: refused before it is read
HEADER = "File: "
_BLOCK = re.compile(r"File: (?P<name>[^\n]*)\n(?P<fence>`{3,})\n(?P<text>.*?)\n(?P=fence)(?:\n\n|\Z)", re.DOTALL)


class AttachmentError(Exception):
    """A file that cannot be attached; the message is the one line to show."""


@dataclass(frozen=True)
class Attachment:
    name: str  # the file's name, without its folder
    text: str
    size: int  # bytes of its text as the message carries it (UTF-8, the last line break left to the fence)

    def block(self) -> str:
        """The file as the message carries it (see the module docstring)."""
        longest = max((len(run) for run in re.findall(r"`+", self.text)), default=0)
        fence = "`" * max(3, longest + 1)
        text = self.text[:-1] if self.text.endswith("\n") else self.text  # the fence's own line break ends it
        return f"{HEADER}{self.name}\n{fence}\n{text}\n{fence}"


def read_attachment(path: str) -> Attachment:
    """The file at `path` (`~` expanded), or AttachmentError with one line saying what is wrong and what to do."""
    where = Path(os.path.expanduser(path.strip()))
    if not where.exists():
        raise AttachmentError(f"No file at {where}: check the path (Tab completes it).")
    if where.is_dir():
        raise AttachmentError(f"{where} is a folder: attach a file in it.")
    try:
        size = where.stat().st_size
        if size > MAX_BYTES:
            raise AttachmentError(
                f"{where.name} is {size / 2**20:.0f} MB, more text than any KV cache holds: attach a smaller file."
            )
        raw = where.read_bytes()
    except OSError as exc:
        raise AttachmentError(f"{where} can't be read ({exc.strerror or exc}).") from None
    if b"\x00" in raw:
        raise AttachmentError(f"{where.name} is a binary file (a NUL byte at {raw.index(0)}): attach a text file.")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is not part of the text
    except UnicodeDecodeError as exc:
        raise AttachmentError(
            f"{where.name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at {exc.start}): "
            "save it as UTF-8 and attach it again."
        ) from None
    name = " ".join(where.name.split()) or "file"  # one line, so the block's header stays one line
    carried = text[:-1] if text.endswith("\n") else text  # as `block` writes it: the chips agree before and after
    return Attachment(name, text, len(carried.encode()))


def compose_message(typed: str, attachments: list[Attachment]) -> str:
    """The message the model reads: each file's block, then what the user typed."""
    return "\n\n".join([a.block() for a in attachments] + ([typed] if typed else []))


def split_message(message: str) -> tuple[str, list[Attachment]]:
    """What the user typed and the files before it, from a message `compose_message` wrote (any other: as is)."""
    attachments, at = [], 0
    while message.startswith(HEADER, at):
        block = _BLOCK.match(message, at)
        if block is None:
            break
        text = block["text"]
        attachments.append(Attachment(block["name"], text, len(text.encode())))
        at = block.end()
    return message[at:], attachments


@dataclass(frozen=True)
class CacheRoom:
    """How many tokens a message may take: the cache's capacity less its pinned sink and room for a reply."""

    capacity: int
    sink: int
    reply: int

    @property
    def tokens(self) -> int:
        return self.capacity - self.sink - self.reply


def fit_problem(name: str, tokens: int, room: CacheRoom, raise_it: str) -> Optional[str]:
    """One line if `tokens` of attached text cannot all stay in the cache; `raise_it` says how to make room."""
    if tokens <= room.tokens:
        return None
    return (
        f"{name} is {tokens:,} tokens; the KV cache has room for {room.tokens:,} in a message "
        f"(capacity {room.capacity:,}, less {room.sink:,} pinned for the system prompt and {room.reply} for the reply): "
        f"attach a smaller file, or {raise_it}."
    )


def checked_message(tokenizer, room: CacheRoom, typed: str, attachments: list[Attachment], raise_it: str) -> str:
    """The message with its files, or AttachmentError if the files cannot all stay in the cache."""
    message = compose_message(typed, attachments)
    if attachments:
        files = compose_message("", attachments)
        tokens = len(tokenizer.encode_text(tokenizer.readable(files)))
        name = attachments[0].name if len(attachments) == 1 else f"{len(attachments)} files"
        problem = fit_problem(name, tokens, room, raise_it)
        if problem:
            raise AttachmentError(problem)
    return message
