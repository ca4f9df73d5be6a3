"""The table of views makes the chat screen: a view added to the table alone has its key, its place in
the layout, its palette entry, its help row, its UI bench settings, its events and its engine needs."""

import pytest
from rich.text import Text
from test_ui import send
from ui_helpers import fake_app, text_of, wait_for

from chat import ui_bench, views
from chat.engine_view import EngineView, draws, handles
from chat.screens.help import HelpScreen
from chat.widgets.panel import Panel
from chat.widgets.transcript import AssistantMessage
from model.runtime.events import TokenGenerated, TurnEnded, TurnStarted


class DummyPanel(Panel):
    """Counts the turns it saw, and draws each step's token while shown."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.turns = 0
        self.drawn: list[str] = []

    @handles(TurnStarted)
    def started(self, _event: TurnStarted) -> None:
        self.turns += 1

    @draws(TokenGenerated)
    def step(self, event: TokenGenerated) -> None:
        self.drawn.append(event.text)
        self.refresh_body()

    def body(self) -> list:
        return [Text(f"turns {self.turns}, last {self.drawn[-1] if self.drawn else ''!r}")]


DUMMY = views.ViewSpec(
    "dummy",
    "f12",
    "Dummy",
    "Only a test adds this one.",
    "a view that counts turns.",
    DummyPanel,
    shown=False,
    needs=views.top_k,
)


@pytest.fixture
def dummy_view(monkeypatch):
    monkeypatch.setattr(views, "VIEWS", [*views.VIEWS, DUMMY])


@pytest.mark.asyncio
async def test_a_view_added_to_the_table_is_everywhere(dummy_view):
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        engine = holder["engine"]
        # Layout: built from its row, in the sidebar, closed.
        panel = app.query_one("#dummy", DummyPanel)
        assert app.query_one("#sidebar") in panel.ancestors and panel.border_title == "Dummy" and not panel.display
        # Its key opens it.
        assert app.screen.active_bindings["f12"].binding.action == "toggle_view('dummy')"
        await pilot.press("f12")
        assert panel.display and "Only a test adds this one." in text_of(panel)
        # Its needs reach the engine: with it open, hiding Next token keeps the top-k computed.
        sent = len(engine.needs_sent)
        await pilot.press("f5")
        assert len(engine.needs_sent) == sent and engine.needs.top_k == 10
        await pilot.press("f12")
        assert engine.needs.top_k == 0
        # The palette lists it, and its entry toggles it.
        [entry] = [c for c in app.get_system_commands(app.screen) if "Dummy" in c.title]
        assert entry.title == "Show/hide the Dummy view" and "F12" in entry.help
        await entry.callback()
        assert panel.display and engine.needs.top_k == 10
        # It draws the events it marks.
        await send(pilot, "What is the capital of France?")
        await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))
        tokens = [e for e in engine.turns[0] if isinstance(e, TokenGenerated)]
        assert panel.turns == 1 and panel.drawn and panel.drawn[-1] == tokens[-1].text
        assert f"turns 1, last {tokens[-1].text!r}" in text_of(panel)
        # The help lists it after F10, with its paragraph.
        await pilot.press("f1")
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        assert "| F9 | show or hide Confidence colouring" in help_screen.text
        assert help_screen.text.index("| F12 | show or hide Dummy |") > help_screen.text.index("| F10 |")
        assert "- **Dummy**: a view that counts turns." in help_screen.text
    # The UI bench measures it opened and closed with the others.
    settings = ui_bench.settings()
    assert settings["app, every view hidden"]["dummy"] is False and settings["app, every view shown"]["dummy"] is True
    alone = ui_bench.settings(per_view=True)["app, dummy alone"]  # its row in the per-view cost table
    assert alone["dummy"] is True and not any(on for view_id, on in alone.items() if view_id != "dummy")


def test_the_table_is_the_only_source_of_view_keys():
    """Every view key the chat screen binds comes from the table, and no two views share a key or an id."""
    keys = [spec.key for spec in views.VIEWS]
    ids = [spec.id for spec in views.VIEWS]
    assert len(set(keys)) == len(keys) and len(set(ids)) == len(ids)
    assert keys == ["f2", "f3", "f4", "f6", "f5", "f7", "f8", "f10", "f9"]  # layout order; F6 (the grid) sits above F5


def test_a_subclass_overriding_a_handler_is_called_once_as_overridden():
    class Base(EngineView):
        @handles(TurnStarted)
        def started(self, event): ...

        @handles(TurnEnded)
        def ended(self, event): ...

    class Child(Base):
        @handles(TurnStarted)
        def started(self, event): ...

    assert Child._handlers == {TurnStarted: [Child.started], TurnEnded: [Base.ended]}
    assert Base._handlers == {TurnStarted: [Base.started], TurnEnded: [Base.ended]}
