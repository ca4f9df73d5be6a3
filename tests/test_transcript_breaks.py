"""A reply's single newlines are line breaks on screen, streamed or finished; code keeps its layout."""

import pytest
from textual.app import App
from ui_helpers import screen_text, wait_for

from chat.widgets.transcript import AssistantMessage

POEM = "Waves fold on the sand,\nsalt wind carries gull voices,\nthe tide keeps its time."
CODE = "```python\ndef add(a, b):\n    return a + b\n```"
LIST = "- one\n- two"
REPLY = f"A haiku:\n\n{POEM}\n\nAnd some code:\n\n{CODE}\n\n{LIST}\n"


class OneReply(App):
    def compose(self):
        yield AssistantMessage()


def rows_with(rows, fragment):
    return [i for i, row in enumerate(rows) if fragment in row]


def assert_lines_kept(rows):
    lines = POEM.split("\n")
    found = [rows_with(rows, line) for line in lines]
    assert all(len(f) == 1 for f in found), (found, rows)
    # Consecutive rows, each holding one line of the poem and nothing of the next.
    assert [f[0] for f in found] == list(range(found[0][0], found[0][0] + len(lines))), rows
    for i, line in enumerate(lines):
        assert rows[found[i][0]].strip().endswith(line)
    # The code block keeps its indentation, one source line per row.
    (def_row,) = rows_with(rows, "def add(a, b):")
    (ret_row,) = rows_with(rows, "return a + b")
    assert ret_row == def_row + 1
    assert rows[ret_row].index("return") - rows[def_row].index("def") == 4
    # Markdown still renders: list bullets, and no fence markers or dashes on screen.
    assert not rows_with(rows, "```") and not rows_with(rows, "- one")
    assert rows_with(rows, "one") and rows_with(rows, "two")


@pytest.mark.asyncio
async def test_single_newlines_are_line_breaks_while_streaming_and_after():
    app = OneReply()
    async with app.run_test(size=(80, 40)) as pilot:
        reply = app.query_one(AssistantMessage)
        # Fragments cut mid-line and mid-newline, as the app's batches are.
        for start in range(0, len(REPLY), 7):
            await reply.add(REPLY[start : start + 7])
        await pilot.pause()
        assert_lines_kept(screen_text(app))

        await reply.finish(REPLY, "stop")
        await pilot.pause()
        assert_lines_kept(screen_text(app))

        # Copy gives the model's exact text, not what the parser was fed.
        reply.action_copy()
        await wait_for(pilot, lambda: app.clipboard != "")
        assert app.clipboard == REPLY
