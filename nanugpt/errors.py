"""The base of every error that is the user's to fix: the CLI prints its message, not a traceback."""


class UserError(Exception):
    """A problem with the user's params, data, checkpoint or environment, with a message naming the fix."""


class TrainingError(UserError):
    """A run that cannot start or continue as configured (batch sizes that do not divide, a diverged loss)."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""
