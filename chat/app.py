"""The Textual app: composition and routing only. Widgets draw; the engine thread computes."""

import sys
from collections.abc import Iterable
from dataclasses import replace
from typing import Optional

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header

from model.internals.watch import Watch
from model.runtime.engine import EngineOptions
from model.runtime.events import (
    ConversationReset,
    HistoryRestored,
    InsideStep,
    ModelFailed,
    ModelLoading,
    ModelReady,
    PrefillDone,
    PrefillProgress,
    TokenGenerated,
    TurnEnded,
    TurnFailed,
    TurnStarted,
)

from . import settings_forms
from .bridge import EngineBridge, EngineFactory
from .draw_pacer import DrawPacer
from .messages import EngineEvent, PromptSubmitted, StepStats
from .recorder import ConversationRecorder
from .screens.conversations import ConversationsScreen
from .screens.help import HelpScreen
from .screens.model_info import ModelInfoScreen
from .store import StoreError
from .widgets.attention_panel import AttentionPanel
from .widgets.cache_grid_panel import CacheGridPanel
from .widgets.cache_panel import CachePanel
from .widgets.confidence import SampledStep
from .widgets.decode_panel import DecodePanel
from .widgets.lens_panel import LensPanel
from .widgets.prefill_panel import PrefillPanel
from .widgets.prompt_input import PromptInput
from .widgets.status_line import StatusLine
from .widgets.topk_panel import TopKPanel
from .widgets.transcript import AssistantMessage, Notice, Transcript, UserMessage, show_confidence

NARROW = 110  # below this many columns the panels give way to a one-line summary
VIEWS = ("prefill", "decode", "cache", "topk", "grid", "attention", "lens", "confidence")  # each can be toggled


class GlasschatApp(App):
    TITLE = "glasschat"
    CSS = """
    #main { height: 1fr; }
    #chat-column { width: 1fr; }
    #sidebar { width: 48; height: 1fr; scrollbar-size-vertical: 1; }
    Screen.narrow #sidebar { display: none; }
    """
    BINDINGS = [
        Binding("escape", "cancel_reply", "Stop reply"),
        Binding("ctrl+n", "new_conversation", "New chat"),
        Binding("ctrl+o", "conversations", "Chats"),
        Binding("ctrl+y", "copy_last_reply", "Copy reply"),
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("f2", "toggle_panel('prefill')", "Prefill", show=False, priority=True),
        Binding("f3", "toggle_panel('decode')", "Decode", show=False, priority=True),
        Binding("f4", "toggle_panel('cache')", "Cache", show=False, priority=True),
        Binding("f5", "toggle_panel('topk')", "Top-k", show=False, priority=True),
        # priority: the prompt box (a TextArea) binds F6 to "select line".
        Binding("f6", "toggle_panel('grid')", "Cache grid", show=False, priority=True),
        Binding("f7", "toggle_panel('attention')", "Attention", show=False, priority=True),
        Binding("f8", "toggle_panel('lens')", "Logit lens", show=False, priority=True),
        Binding("f9", "toggle_confidence", "Confidence", show=False, priority=True),
        Binding("ctrl+t", "toggle_ids", "Token ids", show=False),
        Binding("ctrl+q", "quit", "Quit"),
    ]

    def __init__(
        self,
        options: EngineOptions,
        engine_factory: Optional[EngineFactory] = None,
        recorder: Optional[ConversationRecorder] = None,
        store_problem: str = "",
    ):
        super().__init__()
        self.options = options
        self.recorder = recorder  # None: nothing is saved (no database, or it can't be used)
        self.store_problem = store_problem
        self.bridge = EngineBridge(self, options, engine_factory) if engine_factory else EngineBridge(self, options)
        self.ready = False
        self._busy = False
        self._blink = True  # the prompt cursor's blink setting, kept while a reply pauses it
        self.queue: list[tuple[str, UserMessage]] = []
        self.model_info: dict = {}
        self.reply: Optional[AssistantMessage] = None
        self.last_prefill_tok_s = 0.0
        self.last_decode_tok_s = 0.0
        self._last_cache_tokens = 0
        self._pending_step = None
        self._pending_inside: Optional[InsideStep] = None
        self.confidence = False  # replies tinted by the probability of each token (F9)
        self._pending_text = ""
        self._draw_armed = False
        self._draws = 0  # redraws so far (some views redraw every other time)
        self.pacer = DrawPacer()
        # Kept as attributes: the per-token handlers touch them without a DOM query.
        self.prefill_panel = PrefillPanel(id="prefill")
        self.decode_panel = DecodePanel(id="decode")
        self.cache_panel = CachePanel(id="cache")
        self.topk_panel = TopKPanel(id="topk")
        self.grid_panel = CacheGridPanel(id="grid")
        self.attention_panel = AttentionPanel(id="attention")
        self.lens_panel = LensPanel(id="lens")
        # The extra views are off by default; the attention and lens views cost
        # engine work while open (a watched step every 0.4 s).
        for view in (self.grid_panel, self.attention_panel, self.lens_panel):
            view.display = False

    @property
    def busy(self) -> bool:
        """A reply (or a cache rebuild) is running."""
        return self._busy

    @busy.setter
    def busy(self, value: bool) -> None:
        # The blinking cursor repaints the screen twice a second; while the
        # engine decodes, every repaint takes CPU from it. It blinks again after.
        if self.is_running and value != self._busy:
            prompt = self.query_one(PromptInput)
            if value:
                self._blink, prompt.cursor_blink = prompt.cursor_blink, False
            else:
                prompt.cursor_blink = self._blink
        if not value:
            self.pacer.idle()  # time between replies is not redraw time
        self._busy = value

    # --- layout --------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="main"):
            with Vertical(id="chat-column"):
                yield Transcript(id="transcript")
                yield StatusLine(id="status")
                yield PromptInput(id="prompt")
            with VerticalScroll(id="sidebar"):
                yield self.prefill_panel
                yield self.decode_panel
                yield self.cache_panel
                yield self.grid_panel
                yield self.topk_panel
                yield self.attention_panel
                yield self.lens_panel
        yield Footer()

    def on_mount(self) -> None:
        # The engine thread needs the GIL briefly per token to queue the next
        # step; a shorter switch interval stops a long redraw from holding it.
        sys.setswitchinterval(0.001)
        self.sub_title = "loading the model…"
        self.query_one(PromptInput).focus()
        self._apply_width(self.size.width)
        self.bridge.start()
        if self.store_problem:
            self.call_later(self._show_store_problem, self.store_problem)
        if self.recorder is not None:
            self.recorder.new(self.options.system)

    async def _show_store_problem(self, problem: str) -> None:
        await self.query_one(Transcript).add(Notice(f"{problem} This chat will not be saved.", "warning"))

    def _save(self, action, *args) -> None:
        """Write to the store; a failure is reported once and saving stops, the chat goes on."""
        if self.recorder is None:
            return
        try:
            action(*args)
        except StoreError as exc:
            self.recorder = None
            self.call_later(self._show_store_problem, str(exc))

    def on_resize(self, event) -> None:
        self._apply_width(event.size.width)

    def _apply_width(self, width: int) -> None:
        narrow = width < NARROW
        self.screen.set_class(narrow, "narrow")
        self.query_one(StatusLine).set_class(narrow, "with-summary")

    def on_unmount(self) -> None:
        self.bridge.shutdown(timeout=5.0)

    # --- the user's side -----------------------------------------------------

    async def on_prompt_submitted(self, message: PromptSubmitted) -> None:
        text = message.text
        if not text.strip():
            self.notify("Type a message first: empty messages are not sent.", severity="warning")
            return
        prompt = self.query_one(PromptInput)
        prompt.clear()
        waiting = self.busy or not self.ready
        bubble = UserMessage(text, queued=waiting)
        await self.query_one(Transcript).add(bubble)
        if waiting:
            self.queue.append((text, bubble))
            self.query_one(StatusLine).set_queued(len(self.queue))
        else:
            self._send(text, bubble)

    def _tokenizer(self):
        loaded = getattr(self.bridge.engine, "loaded", None)
        return loaded.tokenizer if loaded is not None else None

    def tokens_of_text(self, text: str):
        """(ids, pieces) of a user message as the model reads it; None before the model loads."""
        tok = self._tokenizer()
        if tok is None:
            return None
        ids = tok.encode_text(tok.readable(text))
        return ids, [tok.piece(i) for i in ids]

    def tokens_of_ids(self, ids: list[int]):
        tok = self._tokenizer()
        return (ids, [tok.piece(i) for i in ids]) if tok is not None else None

    def on_text_area_changed(self, event) -> None:
        """The prompt box counts its tokens as you type (the tokenizer is Rust, not MLX)."""
        tok = self._tokenizer()
        prompt = self.query_one(PromptInput)
        if tok is None or event.text_area is not prompt:
            return
        text = prompt.text
        prompt.border_subtitle = f"{len(tok.encode_text(text))} tokens" if text else None

    def _send(self, text: str, bubble: UserMessage) -> None:
        bubble.mark_sent()
        if self.recorder is not None:
            self._save(self.recorder.user_sent, text)
        self.busy = True
        self.bridge.send(text)

    def _send_next_queued(self) -> None:
        if self.queue and self.ready and not self.busy:
            text, bubble = self.queue.pop(0)
            self.query_one(StatusLine).set_queued(len(self.queue))
            self._send(text, bubble)

    def action_cancel_reply(self) -> None:
        if self.busy:
            self.bridge.cancel()
            self.query_one(StatusLine).set_state("stopping…")

    async def action_new_conversation(self, system: Optional[str] = None) -> None:
        if self.busy:
            self.bridge.cancel()
        system = system if system is not None else self.options.system
        self.bridge.reset(system)
        if self.recorder is not None:
            self.recorder.new(system)

    def action_conversations(self) -> None:
        if self.recorder is None:
            self.notify(self.store_problem or "Saving is off: there is no database.", severity="warning")
            return

        async def chosen(result):
            if result is None:
                return
            kind, conversation_id = result
            if kind == "new":
                await self.action_new_conversation()
            elif kind == "open":
                await self._open_saved(conversation_id)

        self.push_screen(ConversationsScreen(self.recorder.store), chosen)

    async def _open_saved(self, conversation_id: int) -> None:
        if self.busy:
            self.bridge.cancel()
        try:
            system, stored, messages = self.recorder.open(conversation_id)
        except StoreError as exc:
            self.notify(str(exc), severity="error")
            return
        transcript = self.query_one(Transcript)
        await transcript.remove_children()
        for m in stored:
            if m.role == "user":
                await transcript.add(UserMessage(m.content))
            elif m.role == "assistant":
                reply = AssistantMessage(m.content, tuple(m.token_ids or ()))
                await transcript.add(reply)
                if m.status == "cancelled":
                    reply.add_class("cancelled")
        self.options = replace(self.options, system=system)
        self.busy = True  # until the cache is rebuilt
        self.query_one(StatusLine).set_state("rebuilding the KV cache from the saved history…")
        self.bridge.restore(system, messages)

    def action_copy_last_reply(self) -> None:
        reply = self.query_one(Transcript).last_reply()
        if reply is None:
            self.notify("No reply to copy yet.")
            return
        reply.action_copy()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_toggle_panel(self, name: str) -> None:
        panel = self.query_one(f"#{name}")
        panel.display = not panel.display
        if name == "topk":
            self._update_top_k()

        elif name in ("attention", "lens"):
            # Focus stays where it is (usually the prompt, so typing goes on);
            # Tab or a click focuses the attention panel for its keys.
            self._update_watch()

    def _update_top_k(self) -> None:
        # The top-k costs the engine a little per token: it is computed only
        # while the Next token panel or confidence colouring (which keeps each
        # step's top-k) is on.
        wanted = self.topk_panel.display or self.confidence
        self.bridge.update(top_k_shown=self.options.top_k_shown if wanted else 0)

    def _update_watch(self) -> None:
        """Tell the engine which inside views are open; closed ones cost it nothing."""
        attention = self.attention_panel.attention_layer if self.attention_panel.display else None
        self.bridge.set_watch(
            Watch(attention_layer=attention, lens=self.lens_panel.display, lens_layers=self.lens_panel.layers_wanted())
        )

    def on_attention_panel_layer_changed(self, _message) -> None:
        self._update_watch()

    async def action_toggle_confidence(self) -> None:
        self.confidence = not self.confidence
        self._update_top_k()
        replies = list(self.query(AssistantMessage))
        for reply in replies:
            await show_confidence(reply, self.confidence)
        if self.confidence and any(not r.steps for r in replies):
            self.notify("Replies from a saved chat have no recorded probabilities; they stay as text.")

    def action_toggle_ids(self) -> None:
        self.topk_panel.toggle_ids()

    def action_model_info(self) -> None:
        self.push_screen(ModelInfoScreen(self.model_info or {"source": "still loading"}))

    def get_system_commands(self, screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New conversation", "Clear the chat and its KV cache", self.action_new_conversation)
        yield SystemCommand("Conversations", "Open, rename, delete or export saved chats", self.action_conversations)
        yield SystemCommand(
            "System prompt",
            "Set the system prompt (starts a new conversation)",
            lambda: settings_forms.edit_system_prompt(self),
        )
        yield SystemCommand(
            "Sampling settings", "Temperature, top-k, top-p, min-p", lambda: settings_forms.edit_sampling(self)
        )
        yield SystemCommand(
            "Cache size",
            "KV cache capacity and sink (starts a new conversation)",
            lambda: settings_forms.edit_cache(self),
        )
        for name, label in (
            ("prefill", "Prefill"),
            ("decode", "Decode"),
            ("cache", "KV cache"),
            ("topk", "Next token"),
            ("grid", "KV cache grid"),
            ("attention", "Attention"),
            ("lens", "Logit lens"),
        ):
            yield SystemCommand(
                f"Show/hide the {label} panel", "Toggle a side panel", lambda name=name: self.action_toggle_panel(name)
            )
        yield SystemCommand(
            "Confidence colouring",
            "Tint each reply token by its probability; ←/→ shows its top-k",
            self.action_toggle_confidence,
        )
        yield SystemCommand("Token ids", "Show token ids in the Next token panel", self.action_toggle_ids)
        yield SystemCommand(
            "Model info", "Architecture, layers, heads, parameters, weights, backend", self.action_model_info
        )
        yield SystemCommand("Copy last reply", "Copy the last reply to the clipboard", self.action_copy_last_reply)

    # --- the engine's side -----------------------------------------------------

    def on_step_stats(self, message: StepStats) -> None:
        # A newer step supersedes an older one that was never drawn, as
        # `StepStats.can_replace` allows; the chart keeps every step's rate.
        self._pending_step = message.event
        if self.decode_panel.display:
            self.decode_panel.record(message.event)
        self._arm_draw()

    def _arm_draw(self) -> None:
        # Reply text and panels are drawn together, 2 to 5 times a second as
        # the pacer finds affordable: the UI shares the CPU and the GIL with
        # the engine, and each Markdown append and layout pass costs tens of ms.
        if not self._draw_armed:
            self._draw_armed = True
            self.set_timer(self.pacer.interval, self._draw)

    async def _draw(self) -> None:
        self._draw_armed = False
        self.pacer.drew()
        with self.batch_update():  # one screen update for text and panels
            self._draw_step()
            await self._flush_text()

    async def _flush_text(self) -> None:
        text, self._pending_text = self._pending_text, ""
        if text and self.reply is not None and self.reply.is_attached:
            await self.reply.add(text)

    def _draw_step(self, final: bool = False) -> None:
        event, self._pending_step = self._pending_step, None
        if event is None or not self.topk_panel.is_attached:
            return  # nothing new, or the app is closing
        # The big extra views (the grid, the tinted reply) redraw at half the
        # rate, and the inside views when a watched step arrives (at most
        # 2.5 Hz): with every view open, redraws are most of the UI's CPU.
        self._draws += 1
        extras_due = final or self._draws % 2 == 0
        # A hidden panel costs nothing: it is not redrawn.
        if self.topk_panel.display:
            self.topk_panel.show(event)
        if self.decode_panel.display:
            self.decode_panel.show(event)
        if self.cache_panel.display:
            self.cache_panel.show(event.cache)
        if self.grid_panel.display and extras_due:
            self.grid_panel.show(event.cache, new_tokens=1)
        self.last_decode_tok_s = event.live_tok_s
        self._refresh_summary(event.cache)
        inside, self._pending_inside = self._pending_inside, None
        if inside is not None:
            if self.attention_panel.display:
                self.attention_panel.show(inside)
            if self.lens_panel.display:
                self.lens_panel.show(inside)
        if self.reply is not None and self.reply.twin is not None and extras_due:
            self.reply.twin.redraw()

    async def on_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if not self.topk_panel.is_attached:
            return  # the app is closing
        status = self.query_one(StatusLine)
        transcript = self.query_one(Transcript)
        if isinstance(event, ModelLoading):
            status.set_state(f"loading: {event.message}")
        elif isinstance(event, ModelReady):
            self.ready = True
            self.model_info = event.info
            self.sub_title = f"{event.info['architecture']} · {event.info['parameters'] / 1e6:.0f}M · {event.info['weight_dtype']} · {event.info['backend']}"
            self.topk_panel.distribution = event.distribution
            self.cache_panel.show(event.cache)
            self.grid_panel.layer_count = event.info["layers"]
            self.attention_panel.set_layers(event.info["layers"])
            self.lens_panel.layer_count = event.info["layers"]
            self.grid_panel.show(event.cache, new_tokens=0)
            status.set_state("ready")
            self._send_next_queued()
        elif isinstance(event, ModelFailed):
            self.sub_title = "no model"
            status.set_state("no model loaded")
            await transcript.add(Notice(event.message, "error"))
        elif isinstance(event, TurnStarted):
            self._last_cache_tokens = event.reused_tokens
            status.set_state("reading the prompt…")
            self.prefill_panel.show(event)
            self.decode_panel.show(event)
            if event.note:
                await transcript.add(Notice(event.note, "warning"))
            self.reply = AssistantMessage()
            await transcript.add(self.reply)
            if self.confidence:  # the twin shares the reply's step list, so it fills as the reply streams
                await show_confidence(self.reply, True, live=True)
        elif isinstance(event, PrefillProgress):
            if event.turn == 0:  # rebuilding a saved conversation's cache
                status.set_state(f"rebuilding the KV cache: {event.done}/{event.total} tokens")
            if self.prefill_panel.display:
                self.prefill_panel.show(event)
            self.cache_panel.show(event.cache)
            if self.grid_panel.display:
                self.grid_panel.show(event.cache, new_tokens=event.cache.tokens - self._last_cache_tokens)
            self._last_cache_tokens = event.cache.tokens
        elif isinstance(event, HistoryRestored):
            self.cache_panel.show(event.cache)
            await transcript.add(
                Notice(
                    f"Restored {event.messages} messages: {event.tokens} tokens prefilled "
                    f"in {event.seconds:.1f} s to rebuild the cache."
                )
            )
            status.set_state("ready")
            self.busy = False
            self._send_next_queued()
        elif isinstance(event, PrefillDone):
            status.set_state("writing the reply…  (Esc stops)")
            self.prefill_panel.show(event)
            self.last_prefill_tok_s = event.stats.prefill_tok_s
        elif isinstance(event, InsideStep):
            self._pending_inside = event
            self._arm_draw()
        elif isinstance(event, TokenGenerated):
            if self.reply is not None:  # an append: the confidence view draws from it when shown
                self.reply.steps.append(SampledStep(event.token_id, event.text, event.prob, event.top_k))
            # Text is batched with the panels (see _arm_draw): each Markdown append costs a parse and a layout.
            if event.text and self.reply is not None:
                self._pending_text += event.text
                self._arm_draw()
        elif isinstance(event, TurnEnded):
            self._draw_step(final=True)  # the last step's numbers, before the final ones
            await self._flush_text()
            if self.recorder is not None:
                self._save(self.recorder.reply_ended, event, list(event.reply_ids))
            if self.reply is not None:
                self.reply.token_ids = event.reply_ids
                await self.reply.finish(event.text, event.stats.stop_reason)
                if self.reply.twin is not None:
                    self.reply.twin.redraw(force_layout=True)
            self.reply = None
            self.decode_panel.show(event)
            self.cache_panel.show(event.cache)
            self.last_decode_tok_s = event.stats.decode_tok_s
            self._refresh_summary(event.cache)
            status.set_state(
                {"stop": "ready", "length": "ready (reply hit --max-tokens)", "cancelled": "ready (reply stopped)"}[
                    event.stats.stop_reason
                ]
            )
            self.busy = False
            self._send_next_queued()
        elif isinstance(event, TurnFailed):
            await self._flush_text()
            if self.reply is not None:
                await self.reply.finish(self.reply.text, "cancelled")
                self.reply = None
            await transcript.add(Notice(event.message, "error"))
            status.set_state("ready")
            self.busy = False
            self._send_next_queued()
        elif isinstance(event, ConversationReset):
            await transcript.remove_children()
            await transcript.add(
                Notice(
                    "New conversation: the KV cache is empty."
                    + (f" System prompt: {event.system}" if event.system else "")
                )
            )
            self.cache_panel.show(event.cache)
            self.busy = False
            status.set_state("ready")
            self._send_next_queued()

    def _refresh_summary(self, cache) -> None:
        self.query_one(StatusLine).set_summary(self.last_prefill_tok_s, self.last_decode_tok_s, cache)
