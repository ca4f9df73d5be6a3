"""The seam between the engine and its askers: events built by keyword, one handler per event, explicit state.

Plain checks on the shapes the redesign of issue 23 rests on, each able to fail on the
mistake it guards against (see the claim map, tests/README.md).
"""

import dataclasses
import inspect

import pytest

import model.runtime.events as events
from chat.chat_state import ChatState, Move, Phase
from chat.engine_view import EngineView, handles
from model.cache.state import CacheState
from model.runtime.stats import PrefillStats, TurnStats

EVENTS = [c for _, c in inspect.getmembers(events, inspect.isclass) if c.__module__ == events.__name__]


@pytest.mark.parametrize("cls", EVENTS + [CacheState, PrefillStats, TurnStats], ids=lambda c: c.__name__)
def test_every_event_is_built_by_keyword(cls):
    """Two swapped integers passed by position would pass unnoticed; a kw_only dataclass refuses positions."""
    assert dataclasses.is_dataclass(cls)
    fields = dataclasses.fields(cls)
    assert all(f.kw_only for f in fields), [f.name for f in fields if not f.kw_only]
    if fields:
        with pytest.raises(TypeError):
            cls(*[None] * len(fields))


def test_an_event_names_its_turn_by_turn_id():
    """One name for one thing: the id a request gave its turn."""
    for cls in EVENTS:
        names = {f.name for f in dataclasses.fields(cls)}
        assert "turn" not in names, cls.__name__


def test_a_view_has_one_handler_per_event():
    """A second handler for the same event would run in an order set by the class hierarchy: refused."""

    class Once(EngineView):
        @handles(events.TurnEnded)
        def ended(self, event): ...

    with pytest.raises(TypeError, match="TurnEnded already has a handler"):

        class Twice(Once):
            @handles(events.TurnEnded, events.TurnFailed)
            def also_ended(self, event): ...


def test_the_chat_state_moves_only_where_its_transitions_say():
    state = ChatState()
    assert state.phase is Phase.LOADING and state.loading and not state.ready
    assert not state.reply()  # no turn before a model
    assert not state.model_ready()  # the first model, not a switch
    assert state.ready and state.reply() and state.busy
    assert not state.move(Move("branch", 2))  # one thing at a time
    ran = []
    state.deferred = lambda: ran.append("new")
    assert state.take_deferred() is None  # not while busy
    assert state.idle() is None and state.ready
    state.take_deferred()()
    assert ran == ["new"] and state.take_deferred() is None  # once
    assert state.move(Move("branch", 2)) and state.idle() == Move("branch", 2)
    state.switch("other.gguf")
    assert state.idle() is None and state.phase is Phase.SWITCHING  # a reply ending mid-switch leaves it a switch
    state.switch_failed()
    assert state.ready and state.has_model  # the model in use stays
    state.switch("other.gguf")
    assert state.model_ready()  # now it was a switch
    state.model_failed()
    assert state.phase is Phase.NO_MODEL and not state.has_model
