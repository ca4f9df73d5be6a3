"""How every bench talks: progress lines while it runs, then its report, as one JSON line (`--json`) or as text.

With `--json`, stdout holds nothing but the report (progress goes to stderr), so a script
can read it whole; without, both go to stdout for a person to read.
"""

import json
import sys
from collections.abc import Callable


def progress(as_json: bool) -> Callable[[str], None]:
    """Where a bench's progress lines go: stderr when stdout is the JSON report."""
    out = sys.stderr if as_json else sys.stdout
    return lambda line: print(line, file=out, flush=True)


def finish(report: dict, as_json: bool, as_text: Callable[[dict], None]) -> int:
    """Print the report (`as_text` draws it for a person); the exit status."""
    if as_json:
        print(json.dumps(report))
    else:
        as_text(report)
    return 0
