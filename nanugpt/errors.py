"""The base of every error that is the user's to fix: the CLI prints its message, not a traceback."""


class UserError(Exception):
    """A problem with the user's params, data, checkpoint or environment, with a message naming the fix."""
