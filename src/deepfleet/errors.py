"""The one exception type that means "the user's input is wrong" (CLI exit 2, HTTP 4xx)."""


class UserError(Exception):
    """A mistake in the user's input: a bad job file, a missing path, a tampered bundle.

    The message is one line that names the problem; the CLI prints it without a traceback.
    """
