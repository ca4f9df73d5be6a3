"""The help screen: the keys, and what each panel teaches."""

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# glasschat

**Keys**

| key | does |
|---|---|
| Enter | send the message |
| Shift+Enter, Ctrl+J | new line in the message |
| Esc | stop the reply (the partial reply is kept) |
| Ctrl+N | new conversation (clears the KV cache) |
| Ctrl+O | saved conversations: open, rename, delete, export |
| Ctrl+P | command palette: system prompt, sampling, cache size, panels, model info |
| F2 / F3 / F4 / F5 / F6 | show or hide the Prefill / Decode / KV cache / Next token / KV cache grid panel |
| F7 | attention view (focus it: ←/→ layer, h heads) |
| F8 | logit lens view |
| F9 | confidence colouring (focus a reply: ←/→ shows a token's top-k) |
| Ctrl+T | show token ids in the Next token panel |
| Ctrl+Y | copy the last reply (or focus a message and press c) |
| F1, ? | this help |
| Ctrl+Q | quit |

**What the panels show**

- **Prefill**: the new prompt tokens this turn had to read, and the tokens reused
  from the cache. Prefill time runs from your message reaching the engine to the
  first reply token being ready.
- **Decode**: tokens per second while the reply is written, one forward pass per
  token. The reply figure is (tokens − 1) / (last token time − first token time).
- **KV cache**: the keys and values stored for every token read so far. Magenta is
  the pinned system prompt (the sink); when the cache is full, the oldest tokens
  after it are evicted in a block, so memory stays flat.
- **Next token**: the most likely next tokens and their probabilities under the
  distribution the reply is drawn from; ▶ marks the token picked. `·` is a space,
  `↵` a newline.
- **KV cache grid**: the cache as layers × tokens: sink, held, new this step, just
  evicted.
- **Attention**: for the token being written, its softmax(q·kᵀ/√d) weights over every
  cached token, in the layer you pick; the first token often takes a big share (an
  attention sink).
- **Logit lens**: each layer's running guess, read through the final norm and the
  output head; the top row is the model's own prediction.
- **Confidence colouring**: each reply token tinted by the probability it had when it
  was sampled.

The attention and lens views make the engine look inside one step every 0.4 s while
they are open; closed, they cost nothing.
"""


class HelpScreen(ModalScreen):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 84; max-width: 95%; height: 80%; border: round $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,f1,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
