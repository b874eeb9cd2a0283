"""One exception type for problems the user can fix; CLIs print it as one line and exit non-zero."""


class UserError(Exception):
    """Bad input, bad arguments or a bad model file: shown to the user without a traceback."""
