"""Attaching a file in the app: the chip, the box's token count, refusals, what is sent, shown and saved.

The recorded conversation's cache holds 160 tokens with none pinned yet, so a message has room for 128.
"""

import pytest
from textual import events
from ui_helpers import fake_app, text_of, wait_for

from chat.attachments import Attachment, compose_message, split_message
from chat.recorder import ConversationRecorder
from chat.store import Store
from chat.widgets.attachment_chip import AttachmentChip
from chat.widgets.composer import Composer
from chat.widgets.prompt_input import PromptInput
from chat.widgets.token_chips import TokenChips
from chat.widgets.user_message import UserMessage

NOTES = "Trip budget:\ntrain 120 euros\nhotel 300 euros\n"


@pytest.fixture(scope="module")
def tok():
    from model.loading.loader import load_tokenizer

    return load_tokenizer()


def tokens(tok, text: str) -> int:
    return len(tok.encode_text(tok.readable(text)))


def notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def type_in_box(pilot, text: str) -> None:
    await pilot.click(PromptInput)
    pilot.app.query_one(PromptInput).insert(text)
    await pilot.pause(0.05)


@pytest.mark.asyncio
async def test_a_file_becomes_a_chip_counted_in_the_box_and_goes_into_the_message(tmp_path, tok):
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES)
    attachment = Attachment("notes.txt", NOTES, len(NOTES) - 1)  # the last line break is the fence's
    store = Store(tmp_path / "g.db")
    app, holder = fake_app(tokenizer=tok)
    app.recorder = ConversationRecorder(store, "fake", {})
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        box = app.query_one(PromptInput)
        # /file with Tab completing the path, then Enter: a chip, and the box is free again.
        await type_in_box(pilot, f"/file {tmp_path}/no")
        await pilot.press("tab")
        assert box.text == f"/file {notes}"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.query(AttachmentChip))
        chip = app.query_one(AttachmentChip)
        block_tokens = tokens(tok, attachment.block())
        assert text_of(chip).strip() == f"▤ notes.txt · {len(NOTES) - 1} B · {block_tokens} tokens ✕"
        assert box.text == "" and box.border_subtitle == f"{block_tokens} tokens"
        await type_in_box(pilot, "What does the hotel cost?")
        message = compose_message("What does the hotel cost?", [attachment])
        assert box.border_subtitle == f"{tokens(tok, message)} tokens"  # the file's tokens and the question's

        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.busy and app.conversation.tree.path())
        assert [app.conversation.tree.get(t).user for t in app.conversation.tree.path()] == [message]
        assert not app.query(AttachmentChip) and box.border_subtitle is None  # sent with the message
        # The transcript shows the chip and the question, not the file's text; `t` shows every token read.
        bubble = app.query_one(UserMessage)
        shown = text_of(bubble)
        assert f"▤ notes.txt · {len(NOTES) - 1} B · {block_tokens} tokens" in shown
        assert "What does the hotel cost?" in shown and "300 euros" not in shown
        bubble.focus()
        await pilot.press("t")
        await wait_for(pilot, lambda: app.query(TokenChips))
        assert app.query_one(TokenChips).ids == tok.encode_text(tok.readable(message))
    # Saved as the model read it: the file's name and text come back from the store.
    [saved] = [m for m in Store(tmp_path / "g.db").messages(1) if m.role == "user"]
    typed, files = split_message(saved.content)
    assert typed == "What does the hotel cost?" and [(f.name, f.text) for f in files] == [("notes.txt", NOTES[:-1])]


@pytest.mark.asyncio
async def test_a_binary_or_too_big_file_is_refused_in_one_line(tmp_path, tok):
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / "latin1.txt").write_bytes("na\xefve".encode("latin-1"))
    big = tmp_path / "big.txt"
    big.write_text(" ".join(f"item{n}" for n in range(300)))
    app, _ = fake_app(tokenizer=tok)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        composer = app.query_one(Composer)
        for name in ("photo.png", "latin1.txt", "big.txt"):
            assert not await composer.attach(str(tmp_path / name))
        await pilot.pause(0.1)
        said = notices(app)
        assert len(said) == 3 and all("\n" not in line for line in said)
        assert "photo.png is a binary file" in said[0] and "latin1.txt is not UTF-8 text" in said[1]
        big_tokens = tokens(tok, Attachment("big.txt", big.read_text(), 0).block())
        assert said[2].startswith(f"big.txt is {big_tokens:,} tokens; the KV cache has room for 128 in a message")
        assert not app.query(AttachmentChip)
        # Two small files that fit alone but not together: the second is refused, the first stays.
        half = " ".join(f"w{n}" for n in range(30))  # 90 tokens as a block: two are 182
        (tmp_path / "a.txt").write_text(half)
        (tmp_path / "b.txt").write_text(half)
        assert await composer.attach(str(tmp_path / "a.txt"))
        assert not await composer.attach(str(tmp_path / "b.txt"))
        await pilot.pause(0.1)
        assert "b.txt with the files attached before it" in notices(app)[-1]
        assert [c.attachment.name for c in app.query(AttachmentChip)] == ["a.txt"]


@pytest.mark.asyncio
async def test_a_pasted_path_attaches_and_backspace_or_the_cross_takes_it_off(tmp_path, tok):
    (tmp_path / "one.md").write_text("# One\n")
    (tmp_path / "two.md").write_text("# Two\n")
    app, _ = fake_app(tokenizer=tok)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        box = app.query_one(PromptInput)
        box.focus()
        # A paste reaches the app, which hands it to the focused box. Quoted, as a file manager pastes a path:
        app.post_message(events.Paste(f"'{tmp_path / 'one.md'}'"))
        app.post_message(events.Paste(f"file://{tmp_path / 'two.md'}"))
        await wait_for(pilot, lambda: len(app.query(AttachmentChip)) == 2)
        assert box.text == ""
        app.post_message(events.Paste("just some words"))  # not a file: pasted as text
        await pilot.pause(0.1)
        assert box.text == "just some words"
        box.clear()  # as the app does it: the files go with the text
        await wait_for(pilot, lambda: not app.query(AttachmentChip))
        app.post_message(events.Paste(str(tmp_path / "one.md")))
        app.post_message(events.Paste(str(tmp_path / "two.md")))
        await wait_for(pilot, lambda: len(app.query(AttachmentChip)) == 2)
        await pilot.press("backspace")  # in the empty box: the last file comes off
        await wait_for(pilot, lambda: len(app.query(AttachmentChip)) == 1)
        await pilot.click(AttachmentChip)
        await wait_for(pilot, lambda: not app.query(AttachmentChip))


@pytest.mark.asyncio
async def test_editing_a_message_puts_its_files_back_on_it(tmp_path, tok):
    (tmp_path / "notes.txt").write_text(NOTES)
    app, holder = fake_app(tokenizer=tok)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        assert await app.query_one(Composer).attach(str(tmp_path / "notes.txt"))
        await type_in_box(pilot, "Sum it up.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.busy and app.query_one(UserMessage).turn_id is not None)
        app.query_one(UserMessage).focus()
        await pilot.press("e")
        await wait_for(pilot, lambda: app.query(AttachmentChip))
        assert app.query_one(PromptInput).text == "Sum it up."
        assert app.query_one(AttachmentChip).attachment.name == "notes.txt"
        await pilot.press("escape")  # the edit given up: its files go too
        await wait_for(pilot, lambda: not app.query(AttachmentChip))


def test_the_chips_above_the_box_and_in_the_transcript(snap_compare, tmp_path, tok):
    """Layout: a sent message's chip over its question, and two files waiting above the box."""
    (tmp_path / "notes.txt").write_text(NOTES)
    (tmp_path / "todo.md").write_text("1. book the hotel\n2. buy the train tickets\n")
    app, holder = fake_app(tokenizer=tok)

    async def run(pilot):
        app.query_one(PromptInput).cursor_blink = False
        await wait_for(pilot, lambda: app.chat.ready)
        composer = app.query_one(Composer)
        assert await composer.attach(str(tmp_path / "notes.txt"))
        await type_in_box(pilot, "What does the hotel cost?")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.busy and app.conversation.tree.turns)
        assert await composer.attach(str(tmp_path / "notes.txt"))
        assert await composer.attach(str(tmp_path / "todo.md"))
        await type_in_box(pilot, "And what is left to do?")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(100, 30), run_before=run)


@pytest.mark.asyncio
async def test_the_attach_form_shows_a_long_refusal_whole(tmp_path, tok):
    """Ctrl+P "Attach a file": a refusal longer than the form is wide wraps inside it, not cut off at its edge."""
    from textual.containers import Vertical
    from textual.widgets import Input, Label

    from chat import attach_form

    long_name = "quarterly_report_scanned_from_the_office_printer_page_one.pdf"
    (tmp_path / long_name).write_bytes(b"%PDF-1.7\n\x00\x01")
    app, _ = fake_app(tokenizer=tok)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        attach_form.attach_a_file(app)
        await pilot.pause(0.1)
        field = app.screen.query_one("#field-path", Input)
        field.value = str(tmp_path / long_name)
        field.focus()
        await pilot.press("enter")
        await pilot.pause(0.1)
        error = app.screen.query_one("#form-error", Label)
        said = str(error.render())
        assert said.startswith(f"{long_name} is a binary file") and "\n" not in said
        inside = app.screen.query_one(Vertical).content_region
        assert error.region.height >= 2 and inside.contains_region(error.region)  # all of it, on two lines
        assert not app.query(AttachmentChip)
