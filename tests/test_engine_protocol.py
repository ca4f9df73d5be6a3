"""One interface for every engine: the real one, the UI tests' fake and the test harness match the Protocol.

The UI bridge and the headless commands are typed against `ChatEngine`; here the
three implementations are checked against it method by method (names,
parameters, their kinds and which have defaults), so a fake cannot drift from
the engine the app really runs.
"""

import inspect

import pytest
from engine_harness import SyncEngine
from fake_engine import FakeEngine

from model.runtime.chat_engine import ChatEngine
from model.runtime.engine import Engine

METHODS = sorted(name for name, member in vars(ChatEngine).items() if inspect.isfunction(member) and name[0] != "_")


def shape(function) -> list[tuple]:
    return [(p.name, p.kind, p.default is p.empty) for p in inspect.signature(function).parameters.values()]


def test_the_protocol_is_the_whole_interface():
    assert METHODS == [
        "cancel", "edit", "fork", "regenerate", "reset", "restore", "restore_tree", "score", "send", "set_needs",
        "set_sampling", "shutdown", "start", "switch_branch", "switch_model", "tokenizer", "update",
    ]  # fmt: skip


@pytest.mark.parametrize("implementation", [Engine, FakeEngine, SyncEngine])
@pytest.mark.parametrize("method", METHODS)
def test_each_engine_has_the_protocols_methods(implementation, method):
    own = getattr(implementation, method, None)
    assert callable(own), f"{implementation.__name__} lacks {method}"
    assert shape(own) == shape(getattr(ChatEngine, method)), f"{implementation.__name__}.{method}"
