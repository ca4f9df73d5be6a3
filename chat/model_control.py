"""The model and the options from the chat screen: switching models, thinking on or off, options taken in.

A pick (Ctrl+L, or the palette) asks the engine to load the model; a reply in progress
is stopped first and kept. The engine keeps the model in use until the new one is
ready, so a download can be cancelled (Esc) or fail and nothing changes but one line in
the transcript. When the new model is ready the conversation so far is already saved
(it is saved as it goes); the transcript starts over on the new model, and messages
typed while it loaded are carried over and sent. The models opened are remembered in
the settings file for the Models screen.

Options go the same way everywhere: asked of the engine (`app.ask_options`), taken from its
report (`adopt`), remembered in the settings file from that report, never before it: a cache
setting the engine refuses leaves the app, the engine and the file on the old value.
"""

from typing import Optional

from textual.app import SystemCommand

from model.runtime.events import ModelReady, OptionsAdopted, SwitchFailed

from .chat_state import Phase
from .model_catalog import remembered
from .screens.models import Choice, ModelsScreen
from .settings_forms import changes_to_remember, notices_for
from .widgets.transcript import Notice
from .widgets.user_message import UserMessage


def model_name(source: Optional[str]) -> str:
    return source or "the default model"


class ModelControl:
    def __init__(self, control) -> None:
        self.control = control
        self.app = control.app
        self.info: dict = {}  # the model in use, as ModelReady described it

    # --- options ---------------------------------------------------------------------

    def adopt(self, event: OptionsAdopted) -> bool:
        """The options in force now: the conversation takes them, the settings file remembers what changed.
        True when they start a new conversation (a new cache, or another system prompt)."""
        app = self.app
        old, new = app.conversation.options, event.options
        app.conversation.adopt(new)
        values = changes_to_remember(old, new)
        if values:
            app.remember(**values)
        for line in notices_for(old, new):
            self.control.notify(line)
        if new.sampling != old.sampling:
            app.query_one("TopKPanel").distribution = new.sampling.distribution_label()
        return event.cache_reset or new.system != old.system

    # --- switching -------------------------------------------------------------------

    def pick(self) -> None:
        settings = self.app.settings_file
        recent = (settings.settings.recent or ()) if settings is not None else ()

        async def chosen(choice: Optional[Choice]) -> None:
            if choice is not None:
                self.switch(choice[0])

        self.app.push_screen(ModelsScreen(self.app.options.model, recent), chosen)

    def switch(self, source: Optional[str]) -> None:
        state = self.control.state
        if state.phase is Phase.SWITCHING:
            self.control.notify("A model is already loading; Esc cancels it.", severity="warning")
            return
        if state.has_model and source == self.app.options.model:
            self.control.notify(f"{model_name(source)} is already loaded.")
            return
        if state.busy:
            self.app.engine.cancel()  # the reply is kept and saved, as with Esc
        state.switch(source)
        self.control._changed()
        self.control.screen.status.set_state(f"loading {model_name(source)}…  (Esc cancels a download)")
        self.app.engine.switch_model(source)

    async def loaded(self, event: ModelReady, was_switch: bool) -> None:
        """A model is ready: the first, or another (then a new conversation on it, queued messages carried over)."""
        app, info = self.app, event.info
        self.info = info
        app.sub_title = (
            f"{info['architecture']} · {info['parameters'] / 1e6:.0f}M · {info['weight_dtype']} · {info['backend']}"
        )
        if was_switch:
            self.control.screen.stop_editing()  # a new conversation has no message to edit; the text stays
            if app.recorder is not None:
                app.recorder.model = app.options.model or "default"
            app.conversation.reset()
            saved = " The previous conversation is saved (Ctrl+O)." if app.recorder is not None else ""
            await self.control.transcript.start_over(f"Now chatting with {info['source']}.{saved}", info)
            carried = []
            for entry in self.control.queue:
                if isinstance(entry, tuple):  # a typed message is drawn again; a served request is drawn when sent
                    entry = (entry[0], UserMessage(entry[0], queued=True))
                    await self.control.transcript.add(entry[1])
                carried.append(entry)
            self.control.queue = carried
        if app.settings_file is not None and app.options.model is not None:  # the default is always listed
            app.remember(recent=remembered(app.settings_file.settings.recent or (), app.options.model))

    async def failed(self, event: SwitchFailed) -> None:
        has_model = self.control.state.has_model
        still = f" Still on {self.info.get('source', 'the model in use')}." if has_model else ""
        await self.control.transcript.add(Notice(event.message + still, "error"))
        self.control.screen.status.set_state("ready" if has_model else "no model loaded: Ctrl+L picks one")

    # --- thinking ----------------------------------------------------------------------

    def thinking_command(self) -> SystemCommand:
        on = self.app.options.thinking is not False
        how = {"enable_thinking": "the template's enable_thinking", "/no_think": "/no_think after each message"}
        switch = self.info.get("thinking", "")
        help_text = (
            f"{'Off' if on else 'On'} from the next message ({how[switch]})" if switch else "This model does not think"
        )
        return SystemCommand(f"Thinking: turn {'off' if on else 'on'}", help_text, self.toggle_thinking)

    def toggle_thinking(self) -> None:
        if not self.info.get("thinking"):
            self.control.notify("This model does not think: its vocabulary has no <think> and </think> tokens.")
            return
        self.app.ask_options(thinking=self.app.options.thinking is False)  # None (the template's default) is on
