"""Errors that reach the user.

A :class:`UserError` is a mistake in what the user gave (a spec, a CSV file, an argument): the command
line prints its message as one line and exits with status 2, without a traceback. Its message names
the problem and the fix. Anything else that escapes is an internal failure (exit status 1).
"""


class UserError(Exception):
    """A problem with the user's input; the message is one line that says what to change."""

    exit_status = 2

    def __init__(self, message: str):
        if "\n" in message:
            raise ValueError("a UserError message must be one line")
        super().__init__(message)


class LikelihoodDecreasedError(RuntimeError):
    """EM's log-likelihood fell between iterations: a bug in an E-step or M-step, never convergence."""


class DegenerateFitError(UserError):
    """A fit that cannot go on (a covariance that cannot be factorised, an empty component)."""
