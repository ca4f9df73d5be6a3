"""Run one turn as `glasschat run ARGS` does (`python -m tests.cluster_probe ARGS`, from the root) and print its events as JSON lines (tests/event_codec's form).

The tests that read the events of a model split over ranks run this in a child
process: this process becomes rank 0 of a ring, which can be joined once per process.
"""

import json
import sys
from pathlib import Path

import model  # noqa: F401  (OpenBLAS before mlx loads)
from chat.cli import parse_args
from chat.commands import _close, _session
from chat.options import engine_options

sys.path.insert(0, str(Path(__file__).parent))
import event_codec  # noqa: E402


def main(argv: list[str]) -> None:
    args = parse_args(["run", *argv])
    events = []
    session, group = _session(args, engine_options(args), events.append)
    try:
        session.turn(args.prompt)
    finally:
        _close(session, group)
    for event in events:
        if type(event).__name__ in event_codec._TYPES:
            print(json.dumps(event_codec.encode(event)))


if __name__ == "__main__":
    main(sys.argv[1:])
