"""The hostile model files a user reported, through the real CLI: each refused in one line naming what is wrong,
within 30 s and 2 GB, exiting 1 (never a signal or a hang). Before the checks: 100,000 layers died after 19 s
in std::bad_alloc (SIGABRT), the nested-loop template hung, the unknown GGUF version ran, and 0 heads or a
negative hidden size gave a bare ZeroDivisionError / "math domain error"."""

import json
import shutil
import struct

import pytest
from hostile_files import run_bounded
from tiny_models import write_chat_folder

from chat.store import Store

NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good") / "tiny"
    write_chat_folder(folder)
    return folder


def edited(folder, tmp_path, file: str, **changes):
    """A copy of the tiny model folder with keys of one JSON file changed."""
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    data = json.loads((copy / file).read_text())
    data.update(changes)
    (copy / file).write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize(
    "changes, phrases",
    [
        ({"num_hidden_layers": 100_000}, ("config.json", "'num_hidden_layers' is 100000", "from 1 to 1024")),
        ({"num_attention_heads": 0}, ("config.json", "'num_attention_heads' is 0")),
        ({"hidden_size": -64}, ("config.json", "'hidden_size' is -64")),
    ],
    ids=["100000-layers", "0-heads", "negative-hidden-size"],
)
def test_a_bad_config_is_one_line_naming_the_file_the_field_and_the_value(good_folder, tmp_path, changes, phrases):
    folder = edited(good_folder, tmp_path, "config.json", **changes)
    run_bounded("run", "hi", "--model", str(folder)).assert_one_line(*phrases)


def test_a_template_with_nested_loops_is_refused_at_load_naming_it(good_folder, tmp_path):
    folder = edited(good_folder, tmp_path, "tokenizer_config.json", chat_template=NESTED_LOOPS)
    run_bounded("run", "hi", "--model", str(folder)).assert_one_line(
        "chat template (tokenizer_config.json's chat_template) ran past its budget", "refuses it"
    )


def test_a_gguf_of_an_unknown_version_is_refused(tmp_path, default_gguf_path):
    path = tmp_path / "v4.gguf"
    data = bytearray(default_gguf_path.read_bytes())
    data[4:8] = struct.pack("<I", 4)
    path.write_bytes(bytes(data))
    run_bounded("run", "hi", "--model", str(path)).assert_one_line("'v4.gguf' is GGUF version 4", "2 and 3")


# Blows up once the conversation has more than four messages: the third turn (glasschat renders
# placeholders for the messages' text, so a template sees roles and counts, never the words).
LATER = (
    "{% if messages|length > 4 %}" + NESTED_LOOPS + "{% endif %}{% for m in messages %}"
    "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_a_template_failing_on_a_later_turn_is_one_line_and_the_conversation_is_kept(good_folder, tmp_path):
    folder = edited(good_folder, tmp_path, "tokenizer_config.json", chat_template=LATER)
    (tmp_path / "turns.json").write_text(json.dumps(["hello", "again", "and again"]))
    db = tmp_path / "chat.db"
    args = ("replay", str(tmp_path / "turns.json"), "--model", str(folder), "--max-tokens", "3", "--db", str(db))
    line = run_bounded(*args).assert_one_line("turn 3: The chat template", "ran past its budget on this conversation")
    assert "the conversation is kept" in line
    store = Store(db)
    (conversation,) = store.conversations()
    kept = [(m.role, m.content) for m in store.path_to(conversation.id)]
    assert [text for role, text in kept if role == "user"] == ["hello", "again"]
    assert [role for role, _ in kept] == ["user", "assistant", "user", "assistant"]
