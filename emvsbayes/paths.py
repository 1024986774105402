"""What a path given as input is, for messages that say so.

Inputs (spec files, CSV data, results files) are read whole, so they must be regular files: a folder
cannot be read, a device such as ``/dev/zero`` never ends, and a FIFO blocks until some other program
writes to it. Each is refused by name before it is opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def input_kind(path: str | Path) -> str | None:
    """None for a regular file (or one whose kind cannot be seen: opening it reports why), "missing" for
    nothing there, else what the path is: "a folder", "a character device", "a FIFO (named pipe)", ...
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        try:
            os.lstat(path)
        except (OSError, ValueError):
            return "missing"
        return "a broken symbolic link"
    except NotADirectoryError:  # a path through a file, e.g. data.csv/x
        return "missing"
    except (OSError, ValueError):  # no permission to look, a NUL in the name: opening says what is wrong
        return None
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"
