"""What the next message will be: the files attached to it, as chips, above the message box.

The composer wraps the prompt box, so the box's messages reach it first: it
attaches the files the box asks for (refusing, in one line, one that is binary,
not UTF-8, or too big for the cache), counts the box's tokens with the files
included, and on Enter writes the files into the message (`chat/attachments.py`)
before the message goes on to the chat screen. When the screen empties the box
after sending, the files go too; a message it refuses keeps them.
"""

from typing import Optional

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from model.runtime.settings import REPLY_ROOM

from ..attachments import Attachment, AttachmentError, CacheRoom, compose_message, fit_problem, read_attachment
from ..messages import PromptSubmitted
from .attachment_chip import AttachmentChip, count_tokens
from .prompt_input import PromptInput

MAKE_ROOM = "raise the cache size (Ctrl+P, Cache size)"


class Composer(Vertical):
    DEFAULT_CSS = """
    Composer { height: auto; }
    Composer #attachments { height: auto; display: none; padding: 0 1; }
    Composer #attachments.some { display: block; }
    """

    def __init__(self, prompt: PromptInput, **kwargs):
        super().__init__(**kwargs)
        self.prompt = prompt
        self.shelf = Horizontal(id="attachments")

    def compose(self) -> ComposeResult:
        yield self.shelf
        yield self.prompt

    @property
    def attachments(self) -> list[Attachment]:
        return [chip.attachment for chip in self.shelf.query(AttachmentChip)]

    # --- attaching ------------------------------------------------------------

    async def attach(self, path: str) -> bool:
        """Attach the file at `path`; False (and one line shown) if it cannot be."""
        try:
            attachment = read_attachment(path)
        except AttachmentError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return False
        return await self.add(attachment)

    async def add(self, attachment: Attachment) -> bool:
        tok = self.app.tokenizer()
        if tok is None:
            self.notify("The model is still loading: attach the file once it is ready.", severity="warning")
            return False
        tokens = self._count([attachment])
        both = self._count(self.attachments + [attachment])
        name = attachment.name if both == tokens else f"{attachment.name} with the files attached before it"
        problem = fit_problem(name, both, self.room(), MAKE_ROOM)
        if problem:
            self.notify(problem, severity="error", timeout=12)
            return False
        await self.shelf.mount(AttachmentChip(attachment, tokens))
        self._changed()
        return True

    def room(self) -> CacheRoom:
        """The cache's room for a message, from the cache as the engine last reported it."""
        panels = getattr(self.screen, "panels", {})
        state = getattr(panels.get("cache"), "state", None)
        if state is not None:
            return CacheRoom(state.capacity, state.sink_tokens, REPLY_ROOM)
        cache = self.app.options.cache
        return CacheRoom(cache.max_kv_size, cache.keep or 0, REPLY_ROOM)

    async def clear_attachments(self) -> None:
        await self.shelf.remove_children()
        self._changed()

    def _count(self, attachments: list[Attachment], typed: str = "") -> Optional[int]:
        return count_tokens(self.app.tokenizer(), attachments, typed)

    def _changed(self) -> None:
        self.shelf.set_class(bool(self.attachments), "some")
        self.count_tokens()

    def count_tokens(self) -> None:
        """The box's border counts the message's tokens as it will be sent, the files' included."""
        if self.prompt.file_command() is not None:
            self.prompt.border_subtitle = "Enter attaches the file · Tab completes the path"
            return
        text, attachments = self.prompt.text, self.attachments
        tokens = self._count(attachments, text) if (text or attachments) else None
        self.prompt.border_subtitle = f"{tokens:,} tokens" if tokens is not None else None

    # --- the box's messages -----------------------------------------------------

    @on(PromptInput.AttachRequested)
    async def attach_requested(self, message: PromptInput.AttachRequested) -> None:
        message.stop()
        if not message.path:
            self.notify("Give a path: /file PATH (Tab completes it).", severity="warning")
        elif await self.attach(message.path):
            self.prompt.load_text("")  # the /file line has done its work; not Cleared, the files stay

    @on(PromptInput.AttachmentsHeld)
    async def held(self, message: PromptInput.AttachmentsHeld) -> None:
        await self.clear_attachments()
        for attachment in message.attachments:
            await self.shelf.mount(AttachmentChip(attachment, self._count([attachment])))
        self._changed()

    @on(PromptInput.Cleared)
    async def cleared(self) -> None:
        await self.clear_attachments()

    @on(PromptInput.DropLast)
    async def drop_last(self) -> None:
        chips = self.shelf.query(AttachmentChip)
        if chips:
            await chips.last().remove()
            self._changed()

    @on(AttachmentChip.Removed)
    async def removed(self, message: AttachmentChip.Removed) -> None:
        await message.chip.remove()
        self._changed()
        self.prompt.focus()

    @on(PromptSubmitted)
    def with_files(self, message: PromptSubmitted) -> None:
        """The files go into the message as it passes on to the chat screen."""
        if self.attachments:
            message.text = compose_message(message.text.strip(), self.attachments)

    def on_text_area_changed(self, event) -> None:
        event.stop()
        self.count_tokens()
