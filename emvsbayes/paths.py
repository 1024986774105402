"""What a path given as input is, for messages that say so.

Inputs (spec files, CSV data, results files) are read whole, so they must be regular files: a folder
cannot be read, a device such as ``/dev/zero`` never ends, and a FIFO blocks until some other program
writes to it. Each is refused by name before it is opened.
"""

from __future__ import annotations

import errno
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
    except OSError as error:
        if error.errno == errno.ELOOP:  # was "cannot be read (Too many levels of symbolic links); check its permissions"
            return "a symbolic link that loops (it leads back to itself)"
        return None  # no permission to look: opening says what is wrong
    except ValueError:  # a NUL in the name: opening says what is wrong
        return None
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def not_a_folder_above(path: str | Path) -> str | None:
    """"X is a file, not a folder" for the first folder above ``path`` that exists as something else (a file, a
    broken link), where ``path`` could therefore never be made; None when there is none."""
    for above in reversed(Path(path).parents):
        if os.path.lexists(above) and not above.is_dir():
            kind = input_kind(above)
            return f"{above} is {'a file' if kind is None else kind}, not a folder"
    return None


def why_not_writable(path: str | Path, error: OSError) -> str:
    """Why ``path`` could not be made or written, for a message: where a folder above it is a file or a broken
    link, that one is named (mkdir said only "File exists" or "Not a directory"); else the system's reason."""
    in_the_way = not_a_folder_above(path) if error.errno in (errno.EEXIST, errno.ENOTDIR) else None
    if in_the_way is None and error.errno == errno.EEXIST and os.path.lexists(path) and not Path(path).is_dir():
        kind = input_kind(Path(path))  # only making a folder says "File exists": the path is something else
        in_the_way = f"it is {'a file' if kind is None else kind}, not a folder"
    return in_the_way or error.strerror or type(error).__name__


#: The first bytes of every HDF5 file (netCDF-4 is HDF5: a results.nc or study.nc).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Leading bytes of files people give for a CSV or a spec that are not text (a compressed or spreadsheet file, a
#: results file): named, rather than read as text in a wrong encoding. Only signatures no CSV header starts with (binary
#: bytes in each; bzip2's "BZh" and Parquet's "PAR1", which a column name could begin with, are told apart by the
#: bytes after them in :func:`packed_format`).
_PACKED_FORMATS = (
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"PK\x03\x04", "a zip archive (an .xlsx or .ods workbook is one)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Excel (.xls) or other Office file"),
    (HDF5_SIGNATURE, "an HDF5 or netCDF-4 file"),
    (b"CDF\x01", "a netCDF file"),
    (b"CDF\x02", "a netCDF file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"(\xb5/\xfd", "a zstd-compressed file"),
    (b"%PDF-", "a PDF document"),
)


def packed_format(raw: bytes) -> str | None:
    """What a file starting with ``raw`` is, when it is a compressed, spreadsheet, HDF5/netCDF, PDF, bzip2 or
    Parquet file."""
    found = next((what for magic, what in _PACKED_FORMATS if raw.startswith(magic)), None)
    if found is None and raw[:3] == b"BZh" and raw[3:4] in b"123456789" and raw[4:10] == b"1AY&SY":
        found = "a bzip2-compressed file"  # "BZh", the block size, then the block magic (pi's digits in BCD)
    if found is None and raw.startswith(b"PAR1") and b"\x00" in raw[4:4096]:
        found = "a Parquet file"  # "PAR1" then binary pages (a CSV header "PAR1,..." is text)
    return found
