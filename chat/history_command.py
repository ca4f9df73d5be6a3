"""`glasschat history`: the saved conversations, or (`--search WORDS`) the messages that hold every word.

Text is for reading: a search hit is its conversation, message and date on one
line and the matching line under it, each match in «guillemets». `--json` is for
scripts: one object per line (as `replay --json`), the snippet plain with the
matches as character spans. Like grep, a search that finds nothing says so on
stderr and exits 1.
"""

import argparse
import json
import sys
import time

from .search_index import match_expression, print_progress
from .store import Store, default_db_path


def history_command(args: argparse.Namespace) -> int:
    store = Store(args.db or default_db_path(), progress=print_progress)
    if args.search:
        return _search(store, args.search, args.json)
    for c in store.conversations():
        if args.json:
            _line({"id": c.id, "title": c.title, "messages": c.messages, "updated": _iso(c.updated), "model": c.model})
        else:
            print(f"{c.id:>5}  {c.messages:>4} messages  {c.title}")
    return 0


def _search(store: Store, words: str, as_json: bool) -> int:
    if match_expression(words) is None:
        print(
            f"glasschat: --search {words!r} has no word to look for: give one with a letter or digit.", file=sys.stderr
        )
        return 2
    hits = store.search(words)
    if not hits:
        print(f"glasschat: no saved message holds all of: {words}", file=sys.stderr)
        return 1
    for hit in hits:
        if as_json:
            snippet, spans = hit.plain()
            _line(
                {
                    "conversation": hit.conversation_id,
                    "message": hit.message_id,
                    "title": hit.title,
                    "role": hit.role,
                    "created": _iso(hit.created),
                    "snippet": snippet,
                    "matches": spans,
                    "rank": hit.rank,
                }
            )
        else:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(hit.created))
            print(f"{hit.conversation_id:>5}  message {hit.message_id:<6} {hit.role:<9}  {when}  {hit.title}")
            print("       " + "".join(f"«{text}»" if matched else text for text, matched in hit.parts()))
    return 0


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _line(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
