"""One interface for every engine: the real one, its synchronous core and the UI tests' fake match the Protocol.

The app and the headless commands are typed against `ChatEngine`; here the three
implementations are checked against it method by method (names, parameters, their
kinds and which have defaults), so a fake cannot drift from the engine the app really runs.
"""

import inspect

import pytest
from fake_engine import FakeEngine

from model.runtime.chat_engine import ChatEngine
from model.runtime.engine import Engine
from model.runtime.engine_core import EngineCore

METHODS = sorted(name for name, member in vars(ChatEngine).items() if inspect.isfunction(member) and name[0] != "_")


def shape(function) -> list[tuple]:
    return [(p.name, p.kind, p.default is p.empty) for p in inspect.signature(function).parameters.values()]


def test_the_protocol_is_the_whole_interface():
    assert METHODS == [
        "cancel", "generate", "hold", "reset", "score", "set_needs", "shutdown", "start", "switch_model", "text",
        "update",
    ]  # fmt: skip


@pytest.mark.parametrize("implementation", [Engine, EngineCore, FakeEngine])
@pytest.mark.parametrize("method", METHODS)
def test_each_engine_has_the_protocols_methods(implementation, method):
    own = getattr(implementation, method, None)
    assert callable(own), f"{implementation.__name__} lacks {method}"
    assert shape(own) == shape(getattr(ChatEngine, method)), f"{implementation.__name__}.{method}"


def test_the_engine_is_typed_where_it_is_used():
    """No forwarding `__getattr__`: the app's engine is a ChatEngine, every call a method a type checker sees."""
    from chat.app import GlasschatApp

    for cls in (Engine, EngineCore, FakeEngine, GlasschatApp):
        assert "__getattr__" not in vars(cls), cls.__name__
