"""Errors that reach the user.

A :class:`UserError` is a mistake in what the user gave (a spec, a CSV file, an argument): the command
line prints its message as one line and exits with status 2, without a traceback. Its message names
the problem and the fix. Anything else that escapes is an internal failure (exit status 1).
"""


def one_line(text: str) -> str:
    """``text`` with every line break (``\\n``, ``\\r``, U+2028, ...) written as an escape, so it stays one line."""
    text = str(text)
    if len(text.splitlines()) <= 1 and not any(text.endswith(c) for c in _LINE_BREAKS):
        return text
    return "".join(repr(c)[1:-1] if c in _LINE_BREAKS else c for c in text)


#: What :meth:`str.splitlines` splits on.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


class UserError(Exception):
    """A problem with the user's input; the message is one line that says what to change.

    Messages quote what the user gave (file names, column names, values); a line break in those is
    written as an escape (``\\n``) so that the message stays one line.
    """

    exit_status = 2

    def __init__(self, message: str):
        super().__init__(one_line(message))


class ChecksFailedError(UserError):
    """``emvsbayes run --strict``: the run finished, but a sampler check (divergences, R-hat) failed."""

    exit_status = 3


class LikelihoodDecreasedError(RuntimeError):
    """EM's log-likelihood fell between iterations: a bug in an E-step or M-step, never convergence."""


class DegenerateFitError(UserError):
    """A fit that cannot go on (a covariance that cannot be factorised, an empty component)."""
