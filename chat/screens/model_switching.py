"""Switching the model while the app runs (the chat screen's side of the Models screen), and its thinking.

A pick (Ctrl+L, or the palette) asks the engine to load the model; a reply in
progress is stopped first and kept. The engine keeps the model in use until the new
one is ready, so a download can be cancelled (Esc) or fail and nothing changes but
one line in the transcript. When the new model is ready the conversation so far is
already saved (it is saved as it goes); the transcript starts over on the new model,
and messages typed while it loaded are carried over and sent. The models opened are
remembered in the settings file for the Models screen.

A thinking model (Qwen3, SmolLM3) can be asked not to think, from the next message
on: through its template's `enable_thinking`, or its own `/no_think` (see
`model.runtime.thinking`).
"""

from dataclasses import replace
from typing import Optional

from textual.app import SystemCommand

from model.runtime.events import ModelFailed, ModelReady, SwitchFailed

from ..engine_view import handles
from ..model_catalog import remembered
from ..widgets.transcript import Notice
from ..widgets.user_message import UserMessage
from .models import Choice, ModelsScreen


def model_name(source: Optional[str]) -> str:
    return source or "the default model"


class ModelSwitching:
    """Mixed into the chat screen (before it, so a new model's conversation starts before queued messages go)."""

    switching = False  # a switch was asked for and has not finished
    first_load = True  # the model named at start (--model) is loading, perhaps downloading
    asked_model: Optional[str] = None
    has_model = False  # some model is loaded (the first load may have failed)

    def action_models(self) -> None:
        settings = self.app.settings_file
        recent = (settings.settings.recent or ()) if settings is not None else ()

        async def chosen(choice: Optional[Choice]) -> None:
            if choice is not None:
                await self.switch_model(choice[0])

        self.app.push_screen(ModelsScreen(self.app.options.model, recent), chosen)

    async def switch_model(self, source: Optional[str]) -> None:
        if self.switching:
            self.notify("A model is already loading; Esc cancels it.", severity="warning")
            return
        if self.has_model and source == self.app.options.model:
            self.notify(f"{model_name(source)} is already loaded.")
            return
        if self.busy:
            self.app.bridge.cancel()  # the reply is kept and saved, as with Esc
        self.switching, self.asked_model, self.ready = True, source, False
        self.status.set_state(f"loading {model_name(source)}…  (Esc cancels a download)")
        self.app.bridge.switch_model(source)

    def cancel_switch(self) -> bool:
        """Esc while a model loads: stop its download, if there is one. True if a model was loading."""
        if self.switching or self.first_load:
            self.app.bridge.cancel()
            return True
        return False

    @handles(ModelReady)
    async def model_switched(self, event: ModelReady) -> None:
        app = self.app
        self.has_model, self.first_load = True, False
        if self.switching:
            self.switching = False
            app.options = replace(app.options, model=self.asked_model)
            await self._start_over(event)
        if app.settings_file is not None and app.options.model is not None:  # the default is always listed
            app.remember(recent=remembered(app.settings_file.settings.recent or (), app.options.model))

    async def _start_over(self, event: ModelReady) -> None:
        """A new conversation on the new model; messages queued while it loaded stay queued in it."""
        app = self.app
        if app.recorder is not None:
            app.recorder.model = app.options.model or "default"
            app.recorder.new(app.options.system)
        saved = " The previous conversation is saved (Ctrl+O)." if app.recorder is not None else ""
        await self.transcript.start_over(f"Now chatting with {event.info['source']}.{saved}", event.info)
        carried = []
        for text, _old in self.queue:
            bubble = UserMessage(text, queued=True)
            await self.transcript.add(bubble)
            carried.append((text, bubble))
        self.queue = carried

    def thinking_command(self) -> SystemCommand:
        on = self.app.options.thinking is not False
        how = {"enable_thinking": "the template's enable_thinking", "/no_think": "/no_think after each message"}
        switch = self.model_info.get("thinking", "")
        help_text = (
            f"{'Off' if on else 'On'} from the next message ({how[switch]})" if switch else "This model does not think"
        )
        return SystemCommand(f"Thinking: turn {'off' if on else 'on'}", help_text, self.action_toggle_thinking)

    def action_toggle_thinking(self) -> None:
        if not self.model_info.get("thinking"):
            self.notify("This model does not think: its vocabulary has no <think> and </think> tokens.")
            return
        thinking = self.app.options.thinking is False  # None (the template's default) counts as on
        self.app.options = replace(self.app.options, thinking=thinking)
        self.app.bridge.update(thinking=thinking)
        self.app.remember(thinking="on" if thinking else "off")
        self.notify(f"Thinking {'on' if thinking else 'off'} from the next message.")

    @handles(SwitchFailed)
    async def switch_failed(self, event: SwitchFailed) -> None:
        self.switching = False
        self.ready = self.has_model
        still = f" Still on {self.model_info.get('source', 'the model in use')}." if self.has_model else ""
        await self.transcript.add(Notice(event.message + still, "error"))
        self.status.set_state("ready" if self.has_model else "no model loaded: Ctrl+L picks one")
        if self.has_model:
            self._send_next_queued()

    @handles(ModelFailed)
    def model_failed(self, _event: ModelFailed) -> None:
        self.switching = self.has_model = self.first_load = False
        self.app.sub_title = "no model"
