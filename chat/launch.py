"""Start the Textual app on the options from the command line."""


def launch_app(args) -> int:
    from .app import GlasschatApp
    from .cli import engine_options

    app = GlasschatApp(engine_options(args))
    app.run()
    return app.return_code or 0
