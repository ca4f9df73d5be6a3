"""Run one turn as `glasschat run ARGS` does with the attention and lens views open (`python -m tests.split_watch
LAYER ARGS`, from the root), and print each watched step as a JSON line: its layer, attention and lens.

A child process, as in `cluster_probe`: a process joins a ring once.
"""

import json
import sys

import model  # noqa: F401  (OpenBLAS before mlx loads)
from chat.cli import parse_args
from chat.commands import _close, _session
from chat.options import engine_options
from model.internals.needs import StepNeeds
from model.runtime.events import InsideStep


def main(layer: int, argv: list[str]) -> None:
    args = parse_args(["run", *argv])
    events = []
    session, group = _session(args, engine_options(args), events.append)
    try:
        session.engine.set_needs(StepNeeds(top_k=0, attention_layer=layer, lens_layers=(), interval_s=0.0))
        session.turn(args.prompt)
    finally:
        _close(session, group)
    for e in events:
        if isinstance(e, InsideStep):
            lens = [[t.id for t in row] for row in e.lens]
            print(json.dumps({"index": e.index, "layer": e.layer, "attention": e.attention, "lens": lens}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
