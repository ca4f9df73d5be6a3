"""The `glasschat` command: the app by default, plus headless `run`, `tokenize` and `replay`."""

import argparse
import signal
import sys
from typing import Optional

from model.errors import ModelError
from model.loading.weights import LAYOUTS
from model.runtime.engine import EngineOptions
from model.runtime.settings import CacheSettings, SamplingSettings

from .store import StoreError


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and generation (mlx-lm names)")
    g.add_argument("--model", help="a .gguf file, a Hugging Face/MLX folder, or a Hub id (default: SmolLM2-135M)")
    g.add_argument(
        "--weights",
        choices=LAYOUTS,
        default="auto",
        help="weight layout: auto picks float32 on CPU, quantized on a GPU",
    )
    g.add_argument("--system", help="system prompt (default: the model template's own)")
    g.add_argument("--temp", type=float, default=0.0, help="temperature; 0 is greedy")
    g.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    g.add_argument("--min-p", type=float, default=0.0, help="drop tokens under min-p x the top probability")
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--seed", type=int, help="random seed for sampling")
    g.add_argument("--max-tokens", type=int, default=512, help="longest reply, in tokens")
    g.add_argument("--max-kv-size", type=int, default=2048, help="KV cache capacity in tokens")
    g.add_argument("--keep", type=int, help="tokens pinned at the cache start (default: the system prompt)")
    g.add_argument("--kv-bits", type=int, choices=(4, 8), help="quantize the KV cache")
    g.add_argument("--show-top", type=int, default=10, help="next-token candidates to report per step")
    g.add_argument("--db", help="conversation database (default: glasschat.db in the XDG data directory)")


def engine_options(args) -> EngineOptions:
    return EngineOptions(
        model=args.model,
        layout=args.weights,
        system=args.system,
        sampling=SamplingSettings(
            temperature=args.temp,
            top_k=args.top_k,
            top_p=args.top_p,
            min_p=args.min_p,
            repetition_penalty=args.repetition_penalty,
            seed=args.seed,
        ),
        cache=CacheSettings(max_kv_size=args.max_kv_size, keep=args.keep, kv_bits=args.kv_bits),
        max_tokens=args.max_tokens,
        top_k_shown=args.show_top,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glasschat", description=__doc__)
    _model_options(parser)
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="answer one prompt, streaming to stdout")
    run.add_argument("prompt")
    run.add_argument("--json", action="store_true", help="print one JSON object instead")
    _model_options(run)

    tok = sub.add_parser("tokenize", help="show how a message splits into tokens")
    tok.add_argument("text")
    tok.add_argument("--json", action="store_true")
    tok.add_argument("--model")

    replay = sub.add_parser("replay", help="run a JSON array of user messages as one conversation")
    replay.add_argument("file")
    replay.add_argument("--json", action="store_true", help="one JSON object per turn, per line")
    _model_options(replay)
    inspect = sub.add_parser("inspect", help="attention, logit lens, top-k and cache for one prompt, headless")
    inspect.add_argument("prompt")
    inspect.add_argument("--layer", type=int, help="also give this layer's attention head by head")
    inspect.add_argument("--json", action="store_true")
    inspect.add_argument("--model")
    inspect.add_argument("--system")
    inspect.add_argument("--weights", choices=LAYOUTS, default="auto")

    history = sub.add_parser("history", help="list saved conversations")
    history.add_argument("--db")

    export = sub.add_parser("export", help="print a saved conversation as Markdown")
    export.add_argument("conversation", type=int)
    export.add_argument("--db")
    export.add_argument("--out", help="write to this file instead of stdout")

    bench = sub.add_parser("bench", help="measure prefill and decode against mlx-lm and llama.cpp")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--model")
    bench.add_argument("--layouts", default="float32,quantized", help="our weight layouts to measure")
    bench.add_argument("--mlx-lm", default="quantized,float32", help="mlx-lm weight layouts to measure ('' skips)")
    bench.add_argument("--sizes", default="64,512,2048", help="prompt lengths for prefill")
    bench.add_argument("--decode-tokens", type=int, default=256)
    bench.add_argument("--repeats", type=int, default=1)
    bench.add_argument(
        "--budget",
        type=float,
        default=180.0,
        help="skip a measurement the rates so far say would take longer (seconds)",
    )
    bench.add_argument("--show-top", type=int, default=10, help="top-k computed per token, as the UI does")
    bench.add_argument("--skip-extras-check", action="store_true")
    bench.add_argument(
        "--ui", action="store_true", help="instead: decode through the Textual app (headless) against the engine alone"
    )
    bench.add_argument("--rounds", type=int, default=3, help="with --ui: interleaved runs of each setting (medians)")
    bench.add_argument(
        "--eviction-tokens",
        type=int,
        default=600,
        help="decode this many tokens in a 256-token cache to time evictions (0 skips)",
    )
    return parser


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The options for this run. The app takes its defaults from the settings file; a flag still wins."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from .launch import read_settings

        args.settings_file = read_settings()
        parser.set_defaults(**args.settings_file.settings.flag_defaults())
        args = parser.parse_args(argv, namespace=argparse.Namespace(settings_file=args.settings_file))
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and SIGTERM become a clean cancel in the commands below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.command == "run":
            from .commands import run_command

            return run_command(args)
        if args.command == "tokenize":
            from .commands import tokenize_command

            return tokenize_command(args)
        if args.command == "inspect":
            from .commands import inspect_command

            return inspect_command(args)
        if args.command in ("history", "export"):
            from .commands import export_command, history_command

            return history_command(args) if args.command == "history" else export_command(args)
        if args.command == "bench":
            if args.ui:
                from .ui_bench import run as run_ui

                return run_ui(args)
            from bench.run import run

            return run(args)
        if args.command == "replay":
            from .commands import replay_command

            return replay_command(args)
        from .launch import launch_app

        return launch_app(args)
    except (ModelError, StoreError) as exc:
        print(f"glasschat: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("glasschat: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
