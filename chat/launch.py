"""Start the interactive app (a plain prompt loop until the Textual UI lands)."""

import sys

from model.events import TokenGenerated

from .headless import HeadlessSession, TurnResult


def launch_app(args) -> int:
    from .cli import engine_options

    def stream(event):
        if isinstance(event, TokenGenerated) and event.text:
            sys.stdout.write(event.text)
            sys.stdout.flush()

    print("glasschat: loading the model...", file=sys.stderr)
    session = HeadlessSession(engine_options(args), stream)
    print(f"glasschat: {session.ready.info['source']} ready. Ctrl-C stops a reply, Ctrl-D quits.", file=sys.stderr)
    try:
        while True:
            try:
                user = input("\nyou> ")
            except EOFError:
                return 0
            result = TurnResult(user)
            session.engine.send(user)
            try:
                session.collect(result)
            except KeyboardInterrupt:
                session.engine.cancel()
                session.collect(result)
            if result.failed:
                print(f"glasschat: {result.failed.message}", file=sys.stderr)
    finally:
        session.close()
