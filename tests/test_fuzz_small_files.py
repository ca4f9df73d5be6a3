"""A fuzz pass over the small files a user writes by hand: settings.toml, hostfiles, replay files.

Each is generated well-formed and then broken (cut anywhere, a byte flipped, a hostile piece spliced
in: nesting thousands deep, a number of thousands of digits, NaN, a byte-order mark, bytes that are
not UTF-8). The property: the reader gives its result, or one short line (ModelError for hostfiles
and replay files, a problem line for settings, which never stop the app starting), and nothing else.
Fixed seed, few examples; GLASSCHAT_FUZZ_EXAMPLES=N runs N per test, GLASSCHAT_FUZZ_SEED=S from
another seed (tests/fuzz_profile.py).

Found by this pass (fixed with it): arrays nested ~1,000 deep (RecursionError) and numbers of over
4,300 digits (ValueError) escaped all three readers as tracebacks; a hostfile accepted NaN and
Infinity for memory_gb; a settings problem line repeated a value or key of any length, and a
hostfile line a host name with line breaks in it.
"""

import json

import tomli_w
from fuzz_profile import fuzz
from hypothesis import given
from hypothesis import strategies as st

from chat.commands import read_replay_file
from chat.user_settings import load
from model.distributed.hostfile import read_hostfile
from model.errors import ModelError

FUZZ = fuzz(60)
MAX_LINE = 400  # one line a person reads, not a dump of the file

HOSTILE = [
    b"[" * 5000,
    b"{" * 5000,
    b"9" * 5000,
    b"-" + b"1" * 4400,
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\x00",
    b'"\\ud800"',
    b'"a\\nb"',
]
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)


@st.composite
def broken(draw, well_formed: st.SearchStrategy[bytes]) -> bytes:
    """A well-formed file, then cut, flipped or spliced with a hostile piece (or left as it is)."""
    data = draw(well_formed)
    how = draw(st.sampled_from(["as is", "cut", "flip", "splice", "splice"]))
    if how == "cut":
        return data[: draw(st.integers(0, len(data)))]
    if how == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    if how == "splice":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from(HOSTILE)) + data[at:]
    return data


def replay_files() -> st.SearchStrategy[bytes]:
    entry = (
        st.text(max_size=30)
        | st.fixed_dictionaries({"user": st.text(max_size=10), "from": st.integers(-2, 5)})
        | st.fixed_dictionaries({"regenerate": st.integers(-2, 5) | json_values})
        | st.fixed_dictionaries({"fork": st.integers(0, 3), "at": st.integers(-1, 3), "token": st.integers(-1, 2**64)})
        | json_values
    )
    return st.lists(entry, max_size=5).map(lambda v: json.dumps(v).encode()) | json_values.map(
        lambda v: json.dumps(v).encode()
    )


def hostfiles() -> st.SearchStrategy[bytes]:
    host = st.fixed_dictionaries(
        {"ssh": st.sampled_from(["127.0.0.1", "mac-b.local", "a\nb", ""]) | st.text(max_size=300)},
        optional={
            "ips": st.lists(st.sampled_from(["127.0.0.1", "10.0.0.2"]) | st.text(max_size=5), max_size=3) | json_values,
            "memory_gb": st.floats(allow_nan=True) | st.integers() | json_values,
        },
    )
    hosts = st.lists(host | json_values, max_size=4)
    return (hosts | hosts.map(lambda h: {"hosts": h}) | json_values).map(lambda v: json.dumps(v).encode())


def settings_files() -> st.SearchStrategy[bytes]:
    sections = st.sampled_from(["sampling", "cache", "decode", "chat", "app", "models", "other"])
    keys = st.sampled_from(["temp", "top_k", "max_kv_size", "keep", "kv_bits", "system", "views", "recent", "x"])
    toml_values = st.recursive(
        st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=300),
        lambda inner: st.lists(inner, max_size=3),
        max_leaves=5,
    )
    tables = st.dictionaries(sections | st.text(max_size=5), st.dictionaries(keys | st.text(max_size=5), toml_values))
    return tables.map(lambda t: tomli_w.dumps(t).encode())


def one_line(message: str) -> None:
    assert "\n" not in message and len(message) <= MAX_LINE, message[:500]


@FUZZ
@given(data=broken(replay_files()))
def test_replay_files(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("replay") / "turns.json"
    path.write_bytes(data)
    try:
        read_replay_file(str(path))
    except ModelError as exc:
        one_line(str(exc))


@FUZZ
@given(data=broken(hostfiles()))
def test_hostfiles(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("hosts") / "hosts.json"
    path.write_bytes(data)
    try:
        hosts = read_hostfile(str(path))
    except ModelError as exc:
        one_line(str(exc))
        return
    assert all(h.memory_gb is None or 0 < h.memory_gb < float("inf") for h in hosts)


@FUZZ
@given(data=broken(settings_files()))
def test_settings_files(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("config") / "settings.toml"
    path.write_bytes(data)
    found = load(path, views=("topk", "cache"), themes=("textual-dark",))  # never raises: the app starts
    for problem in found.problems:
        one_line(problem.replace(str(path), "settings.toml"))
