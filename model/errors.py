"""The one exception a user can cause, carrying the one line they should read."""


class ModelError(Exception):
    """A problem with the model or the input that the user can fix.

    The message is a single sentence that says what went wrong and what to do;
    the CLI and the UI print it as it is, with no traceback.
    """
