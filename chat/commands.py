"""The headless subcommands: `run`, `tokenize`, `replay`, `inspect`, `export` and `bench` (`history`: its own module).

Each takes the parsed options (see `chat/options.py`) and returns the exit status.
"""

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from typing import Optional

from model.errors import ModelError
from model.runtime.events import Event, TokenGenerated
from model.runtime.headless import HeadlessSession, TurnResult
from model.runtime.settings import REPLY_ROOM

from .attachments import CacheRoom, checked_message, read_attachment
from .export import conversation_json, conversation_markdown
from .options import engine_options
from .recorder import ConversationRecorder
from .replay_entries import ReplayEntry, parse_entries, plan
from .search_index import print_progress
from .store import Store, default_db_path


def _blas_note(info: dict) -> None:
    """Once the model is ready: one line if MLX's BLAS is slower than this machine allows."""
    if info.get("blas_note"):
        print(f"glasschat: {info['blas_note']}", file=sys.stderr)


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _streamer(enabled: bool) -> Callable[[Event], None]:
    def on_event(event: Event) -> None:
        if not enabled:
            return
        if isinstance(event, TokenGenerated) and event.text:
            sys.stdout.write(event.text)
            sys.stdout.flush()

    return on_event


def _group(args: argparse.Namespace):
    """With --ranks N > 1 or --hostfile: the group (rank 0 is this process); None for one process."""
    if args.ranks < 1:
        raise ModelError(f"--ranks {args.ranks}: give 1 or more processes.")
    if args.hostfile:
        return _hostfile_group(args)
    if args.ranks == 1:
        if args.pipeline:
            raise ModelError("--pipeline splits the model over ranks: give --ranks 2 or more (or --hostfile) too.")
        return None
    from model.distributed.group import LocalGroup

    return LocalGroup(args.ranks, args.model, args.weights, args.pipeline)


def _hostfile_group(args: argparse.Namespace):
    """One rank per host in the hostfile, checked (and every host reached) before anything is started."""
    from model.distributed.group import LocalGroup
    from model.distributed.hostfile import check_reachable, read_hostfile

    if args.ranks != 1:
        raise ModelError("Give --ranks (processes on this machine) or --hostfile (one per host), not both.")
    hosts = read_hostfile(args.hostfile)
    check_reachable(hosts)
    return LocalGroup(len(hosts), args.model, args.weights, args.pipeline, hosts, f"--hostfile {args.hostfile}")


def _with_group(row: dict, group, result: TurnResult) -> dict:
    """A --json row, plus the group's figures when there is one (the model facts stay the full model's)."""
    if group is None:
        return row
    if "model" in row:
        row["model"] = {k: v for k, v in row["model"].items() if k != "cluster"}
    figures = group.figures().as_dict()
    return {**row, "ranks": figures.pop("ranks"), **figures, "step_timing": _step_timing(result)}


def _step_timing(result: TurnResult) -> Optional[dict]:
    """This turn's decode steps timed collective by collective (model.distributed.step_timer), averaged."""
    # The first decode step of a reply is always timed, before its first token is reported.
    timed = list({step.timing.step: step.timing for step in result.cluster if step.timing is not None}.values())
    if not timed:
        return None
    return {
        "timed_steps": len(timed),
        "comm_s": sum(t.comm_s for t in timed) / len(timed),
        "compute_s": sum(t.compute_s for t in timed) / len(timed),
        "collectives": timed[-1].collectives,
    }


def _session(args: argparse.Namespace, options, on_event=None, saver=None) -> tuple[HeadlessSession, object]:
    group = _group(args)
    if group is not None:
        options = replace(options, shard=group.shard)
    try:
        return HeadlessSession(options, on_event or _streamer(not args.json), saver=saver), group
    except BaseException:
        if group is not None:
            group.close()
        raise


def _close(session: HeadlessSession, group) -> None:
    session.close()
    if group is not None:
        group.close()


def _with_files(session: HeadlessSession, typed: str, attachments: list) -> str:
    """The message with the --file attachments written in; one line if they would not stay in the cache."""
    if not attachments:
        return typed
    cache = session.ready.cache
    room = CacheRoom(cache.capacity, cache.sink_tokens, REPLY_ROOM)
    return checked_message(session.conversation.text.tokenizer, room, typed, attachments, "raise --max-kv-size")


def run_command(args: argparse.Namespace) -> int:
    attachments = [read_attachment(path) for path in args.files]  # read before the model loads: a bad one fails fast
    session, group = _session(args, engine_options(args))
    _blas_note(session.ready.info)
    try:
        prompt = _with_files(session, args.prompt, attachments)
        result = session.send(lambda conversation: conversation.follow(prompt))
        try:
            session.collect(result)
        except KeyboardInterrupt:
            # Stop at the next token and keep what was written.
            session.engine.cancel()
            session.collect(result)
        if result.failed:
            raise ModelError(result.failed.message)
        if args.json:
            out = result.as_json(session.ready.info)
            out["path"] = session.ready.info.get("compute_path")  # "cpu" or "gpu": which code path ran
            _print_json(_with_group(out, group, result))
        else:
            sys.stdout.write("\n")
            e = result.ended.stats
            print(
                f"[{e.prompt_tokens} prompt tokens, prefill {e.prefill_s:.2f}s ({e.prefill_tok_s:.0f} tok/s); "
                f"{e.generated_tokens} tokens at {e.decode_tok_s:.1f} tok/s"
                + (f", {e.accepted_tokens} of them guessed by prompt lookup" if e.accepted_tokens else "")
                + f"; stop: {e.stop_reason}]",
                file=sys.stderr,
            )
        return 0
    finally:
        _close(session, group)


def tokenize_command(args: argparse.Namespace) -> int:
    from model.loading.loader import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    ids = tokenizer.encode_text(args.text)
    pieces = [tokenizer.piece(i) for i in ids]
    if args.json:
        _print_json({"ids": ids, "pieces": pieces})
    else:
        for i, p in zip(ids, pieces):
            print(f"{i:>7}  {p!r}")
        print(f"{len(ids)} tokens")
    return 0


def read_replay_file(path: str) -> list[ReplayEntry]:
    try:
        raw = open(path, "rb").read()
    except OSError as exc:
        raise ModelError(f"Cannot read '{path}' ({exc.strerror}): give a JSON file of user messages.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"'{path}' is not valid UTF-8 (byte {exc.start}): save it as UTF-8 and try again.")
    try:
        messages = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"'{path}' is not valid JSON (line {exc.lineno}): it must be an array of strings.")
    except (ValueError, RecursionError):  # a number of over 4,300 digits; arrays nested ~1,000 deep
        raise ModelError(f"'{path}' is not JSON glasschat reads (too deeply nested, or a number too long).")
    return parse_entries(messages, path)


def _replay_row(result: TurnResult, n: int, entry: ReplayEntry, numbers: dict[int, int], path: list[int]) -> dict:
    """`replay --json`'s object for entry `n`: `run --json`'s, less the model and top-k, plus where it sits."""
    row = result.as_json({})
    row.pop("model")
    row.pop("top_k")
    entry_of = {turn_id: entry_n for entry_n, turn_id in numbers.items()}
    out = {"turn": n, "user": result.user, **row, "path": [entry_of[t] for t in path]}
    if entry.kind == "fork":
        out.update(forked_at=entry.at, token_forced=entry.token)
    return out


def replay_command(args: argparse.Namespace) -> int:
    entries = read_replay_file(args.file)
    attachments = [read_attachment(path) for path in args.files]
    if attachments and entries and entries[0].user is None:
        raise ModelError("--file attaches to the first entry's message, and the first entry has none.")
    options = engine_options(args)
    recorder = None
    if args.db:
        settings = {"sampling": asdict(options.sampling), "cache": asdict(options.cache)}
        recorder = ConversationRecorder(Store(args.db, progress=print_progress), args.model or "default", settings)
    session, group = _session(args, options, saver=recorder)
    _blas_note(session.ready.info)
    try:
        if attachments and entries:
            entries[0] = replace(entries[0], user=_with_files(session, entries[0].user, attachments))
    except BaseException:
        _close(session, group)
        raise
    numbers: dict[int, int] = {0: 0}  # entry number -> the conversation's turn id (0: the system prompt)
    failures = 0
    try:
        for n, entry in enumerate(entries, start=1):
            if entry.turn is not None and entry.turn not in numbers:
                failures += 1
                print(
                    f"glasschat: turn {n}: turn {entry.turn} failed, so there is nothing to branch from.",
                    file=sys.stderr,
                )
                continue
            if not args.json:
                print(f"\n>>> {entry.user if entry.user is not None else f'({entry.kind} turn {entry.turn})'}")
            result = session.ask(partial(plan, entry=entry, turn_id=numbers.get(entry.turn, 0)))
            if result.failed:
                failures += 1
                print(f"glasschat: turn {n}: {result.failed.message}", file=sys.stderr)
                continue
            numbers[n] = turn_id = result.ended.turn_id
            if args.json:
                path = session.conversation.tree.path(turn_id)
                _print_json(_with_group(_replay_row(result, n, entry, numbers, path), group, result))
            else:
                print()
        return 1 if failures else 0
    finally:
        _close(session, group)


def export_command(args: argparse.Namespace) -> int:
    store = Store(args.db or default_db_path(), progress=print_progress)
    if args.json:
        text = json.dumps(conversation_json(store, args.conversation), ensure_ascii=False, indent=1) + "\n"
    else:
        text = conversation_markdown(store, args.conversation)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def inspect_command(args: argparse.Namespace) -> int:
    from model.loading.loader import load_model
    from model.runtime.inspect import inspect_prompt

    group = _group(args)
    try:
        loaded = load_model(args.model, args.weights)
        _blas_note(loaded.info())
        if group is not None:
            loaded = group.shard(loaded)  # this thread owns MLX here: no engine thread
        layers = loaded.info()["layers"]  # the whole model's, when split
        if args.layer is not None and not 0 <= args.layer < layers:
            raise ModelError(f"--layer must be between 0 and {layers - 1}.")
        data = inspect_prompt(loaded, args.prompt, args.system, args.layer)
        if group is not None:
            figures = group.figures().as_dict()
            data = {**data, "ranks": figures.pop("ranks"), **figures}
    finally:
        if group is not None:
            group.close()
    if args.json:
        _print_json(data)
        return 0
    pieces = data["tokens"]["pieces"]
    print(f"{len(pieces)} prompt tokens; next token after {pieces[-1]!r}:")
    for _tid, text, prob in data["top_k"][:5]:
        print(f"  {prob * 100:5.1f}%  {text!r}")
    print("logit lens (each layer's best guess):")
    for n, top in enumerate(data["logit_lens"]):
        print(f"  layer {n:2d}: {top[0][1]!r} {top[0][2] * 100:.0f}%")
    layer = args.layer if args.layer is not None else len(data["attention"]) - 1
    weights = data["attention"][layer]
    best = sorted(range(len(weights)), key=weights.__getitem__, reverse=True)[:5]
    print(f"layer {layer} attends most to: " + ", ".join(f"{pieces[i]!r} {weights[i] * 100:.0f}%" for i in best))
    return 0


def bench_command(args: argparse.Namespace) -> int:
    """Speed against the peers, (`--ui`) decode through the app against the engine alone, (`--ranks N`,
    `--hostfile`) one process against N ranks, (`--scaling`) memory and a 1B-shaped model, or (`--history`)
    search of saved conversations."""
    if args.ui:
        from .ui_bench import run  # the Textual app: imported only when measured
    elif args.ranks > 1 or args.hostfile:
        from bench.ranks import run  # 1 process against N ranks, tensor and pipeline: a section of its own
    elif args.history:
        from .history_bench import run  # search of the saved conversations: measures the store, so in chat
    elif args.scaling:
        from bench.scaling import run  # memory by layout, and a 1B-shaped model: each in a fresh process
    else:
        from bench.run import run
    return run(args)
