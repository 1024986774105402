"""Errors that reach the user.

A :class:`UserError` is a mistake in what the user gave (a spec, a CSV file, an argument): the command
line prints its message as one line and exits with status 2, without a traceback. Its message names
the problem and the fix. Anything else that escapes is an internal failure (exit status 1).
"""

import contextlib
import contextvars
import unicodedata

#: How the user names the output folder where a message says to choose another: ``--out`` on the command line,
#: ``out=`` in the Python API (:func:`out_option_named`).
_OUT_OPTION = contextvars.ContextVar("out_option", default="--out")


def out_option() -> str:
    """``"--out"``, or ``"out="`` inside the API's calls: for messages that say to choose another output folder."""
    return _OUT_OPTION.get()


def in_python() -> bool:
    """Whether the message is for a caller of the Python API (inside its calls), not the command line."""
    return _OUT_OPTION.get() == "out="


@contextlib.contextmanager
def out_option_named(name: str):
    """Messages inside the block name the output folder's option as ``name``."""
    token = _OUT_OPTION.set(name)
    try:
        yield
    finally:
        _OUT_OPTION.reset(token)


def one_line(text: str) -> str:
    """``text`` with every line break (``\\n``, ``\\r``, U+2028, ...), control character (an escape
    sequence would drive the terminal) and bidirectional-override character (U+202E would show the rest of
    the line reversed) written as an escape, so it stays one line that reads as it is."""
    text = str(text)
    if not any(c in _ESCAPED or unicodedata.category(c) == "Cc" for c in text):
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if c in _ESCAPED or unicodedata.category(c) == "Cc"
                   else c for c in text)


def visible(text: str) -> str:
    """``text`` with each character that prints as nothing or as a plain space (a zero-width space, a no-break
    space, a soft hyphen: what :meth:`str.isprintable` calls unprintable) written as its escape, as ``repr`` does
    inside quotes: a listing of names shows why ``'a'`` is not ``'a\\u200b'``."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def name_listing(names, limit: int = 20, width: int = 40) -> str:
    """Names (columns, data sets) for a message, comma-separated: each made :func:`visible` and cut to ``width``
    characters (a 5,000-character header cell stays readable), at most ``limit`` of them."""
    names = [visible(name) for name in names]
    shown = ", ".join(name if len(name) <= width else name[: width - 1] + "…" for name in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


#: What :meth:`str.splitlines` splits on.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
#: Bidirectional embeddings, overrides, isolates and marks: they reorder the text shown around them.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_ESCAPED = _LINE_BREAKS | BIDI_CONTROLS

#: A quoted value (a CSV cell, a column name) is cut to this many characters in a message.
QUOTE_LIMIT = 60
#: A message is cut to this many characters, keeping its end (which says what to do).
MESSAGE_LIMIT = 1000


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters with an ellipsis inside the quotes."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[: limit - 2] + "…" + text[-1] if isinstance(value, str) else text[: limit - 1] + "…"


def _cut(message: str) -> str:
    if len(message) <= MESSAGE_LIMIT:
        return message
    head, tail = MESSAGE_LIMIT * 2 // 3, MESSAGE_LIMIT // 3
    return f"{message[:head]} … {message[-tail:]}"


class UserError(Exception):
    """A problem with the user's input; the message is one line that says what to change.

    Messages quote what the user gave (file names, column names, values); a line break in those is
    written as an escape (``\\n``) so that the message stays one line.
    """

    exit_status = 2

    def __init__(self, message: str):
        super().__init__(_cut(one_line(message)))


class ChecksFailedError(UserError):
    """``emvsbayes run --strict``: the run finished, but a sampler check (divergences, R-hat) failed."""

    exit_status = 3


class LikelihoodDecreasedError(RuntimeError):
    """EM's log-likelihood fell between iterations: a bug in an E-step or M-step, never convergence."""


class DegenerateFitError(UserError):
    """A fit that cannot go on (a covariance that cannot be factorised, an empty component)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch system ending a job) raised where the command is, so that it
    unwinds as Ctrl-C does: outputs not yet published are removed, the folder's lock released, a cluster closed."""
