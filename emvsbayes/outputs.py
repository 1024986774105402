"""Output folders: one writer at a time, nothing written over what emvsbayes did not write, and a
results file and its page published as one unit.

A run (or a study) writes its two files into a fresh hidden *unit* folder and then switches one
symbolic link, so a reader of the output folder sees the old pair or the new pair, never a mix::

    OUT/results.nc -> .emvsbayes/current/results.nc    (relative links, made once)
    OUT/index.html -> .emvsbayes/current/index.html
    OUT/.emvsbayes/current -> unit-<id>                (replaced in one rename: the switch)
    OUT/.emvsbayes/unit-<id>/results.nc, index.html, unit.json
    OUT/.emvsbayes/lock                                (held while a command writes; holds its pid)

- **Lock.** ``fcntl.flock`` on ``.emvsbayes/lock``: the kernel releases it when its holder dies, so a
  lock left by a killed run is stale by construction and the next run takes it; the pid written in
  the file names the live holder in the refusal. Forked children close their copy.
- **Ownership.** Before anything is fitted, every name a command will replace must be its own kind
  of emvsbayes output (a results file of ours, a page of ours, or the links above); anything else
  (an input CSV called ``index.html``, a user's link) is refused with a one-line error.
- **Units.** ``unit.json`` names the pair and the SHA-256 of each file. Units that are not current
  (left by a run killed before or after its switch) and stale temporaries are removed under the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from emvsbayes.errors import UserError, out_option
from emvsbayes.paths import why_not_writable

META = ".emvsbayes"
LOCK = "lock"
CURRENT = "current"
UNIT_PREFIX = "unit-"
UNIT_MANIFEST = "unit.json"
#: kind -> the files one unit publishes (the results file first, then its page)
KINDS = {"run": ("results.nc", "index.html"), "study": ("study.nc", "index.html", "coverage.svg")}
RESULTS_NAMES = {"run": "results.nc", "study": "study.nc"}
#: what every page emvsbayes writes carries in its head (the run page, the study page, the reports index)
GENERATOR = "<meta name='generator' content='emvsbayes"
#: heads of pages written before the generator tag existed (run page and reports index; study page)
LEGACY_PAGE_HEADS = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                     "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none';",
                     '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>')
#: the header line of a study page written before the generator tag (its head alone is common boilerplate)
LEGACY_STUDY_HEADER = re.compile(r'</h1><p class="sub">(coverage|sbc) study, [^<]*</p></header><main>')

# Lock files held by this process, closed in forked children so that a child outliving a killed run
# does not keep its folder locked.
_HELD: dict[int, Path] = {}


def _close_held_in_child() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def process_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------------
# What a file is


def file_head(path: Path, size: int = 4096) -> str | None:
    """The first ``size`` bytes of a file as text (None when it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size).decode("utf-8", errors="replace")
    except OSError:
        return None


def is_our_page(path: Path) -> bool:
    """A regular file whose head is that of a page emvsbayes writes."""
    head = file_head(path)
    if head is None:
        return False
    if GENERATOR in head:
        return True
    if head.startswith(LEGACY_PAGE_HEADS[0]):
        return True
    return head.startswith(LEGACY_PAGE_HEADS[1]) and LEGACY_STUDY_HEADER.search(_tail(path)) is not None


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(1 << 20).decode("utf-8", errors="replace")
    except OSError:
        return ""


def results_format(path: Path) -> str | None:
    """The ``format`` root attribute of an HDF5 file, or None when it is not one that can be read."""
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != b"\x89HDF\r\n\x1a\n":
                return None
        import h5py

        with h5py.File(path, "r") as handle:
            value = handle.attrs.get("format")
    except Exception:  # noqa: BLE001 - h5py raises several unrelated types for a damaged file
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def results_owner(path: Path) -> str | None:
    """The ``spec_name`` root attribute of a results file (the spec that wrote it), or None."""
    try:
        import h5py

        with h5py.File(path, "r") as handle:
            value = handle.attrs.get("spec_name")
    except Exception:  # noqa: BLE001 - not a readable HDF5 file: foreign() has said what it is
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) and value else None


def _our_link(path: Path) -> bool:
    try:
        return os.readlink(path) == f"{META}/{CURRENT}/{path.name}"
    except OSError:
        return False


def foreign(path: Path, role: str) -> str | None:
    """Why ``path`` may not be replaced by an output of ``role`` ("results" or "page"); None when it may."""
    if not os.path.lexists(path):
        return None
    ours = _our_link(path)
    if path.is_symlink() and not ours:
        return f"is a link to {os.readlink(path)}, not one emvsbayes made"
    if path.is_dir():
        return "is a folder"
    if not path.is_file():
        return None if ours else "is not a regular file"
    from emvsbayes.results import RESULTS_FORMAT
    from emvsbayes.results import STUDY_FORMAT

    found = results_format(path)
    if role == "page":
        if found is not None:
            return "is a results file, not a report page"
        if ours and path.name != "index.html":
            return "is one of the outputs published together there (a study's figure), not a report page"
        return None if ours or is_our_page(path) else "is not a report page written by emvsbayes"
    if ours or found in (RESULTS_FORMAT, STUDY_FORMAT):
        return None
    return "is not a results file written by emvsbayes"


def published_together(path: Path) -> str | None:
    """Why a file written on its own (the Python API's ``save`` and ``report``) may not go to ``path``: it is one
    of the outputs a command published as a matched set in that folder (a run's results and page, a study's
    file, page and figure); replacing one alone breaks the set. None when it may."""
    path = Path(path)
    folder = path.parent
    if (folder / META).is_dir() and any(path.name in names for names in KINDS.values()) and \
            any(_our_link(folder / name) for names in KINDS.values() for name in names):
        return f"is one of the outputs published together in {folder} (by 'emvsbayes run', 'study' or 'report')"
    return None


# --------------------------------------------------------------------------------------------------
# The folder


def _acquire(lock_path: Path, folder: Path) -> int:
    """An exclusive flock on ``lock_path`` (refusal naming the holder's pid when another has it)."""
    while True:
        # O_NOFOLLOW: a lock "file" that is a link elsewhere is refused, never truncated through.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", errors="replace").strip()
            finally:
                os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "another process"
            if holder.isdigit() and not process_alive(holder):
                who = f"a process left by run pid {holder}, which has ended"
            raise UserError(f"{folder}: another emvsbayes command ({who}) is writing there; wait for it to finish "
                            f"or choose another folder with {out_option()}") from None
        # The file may have been removed (and a new one made) between open and flock: lock that one.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _HELD[fd] = lock_path
            return fd
        os.close(fd)


def _release(fd: int) -> None:
    _HELD.pop(fd, None)
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


#: the names whose hidden temporaries (``.NAME.pid<PID>.XXXX.tmp``, see atomic_write) a folder may hold
TEMPORARY_NAMES = ("results.nc", "index.html", "study.nc")


def _stale_temporary(name: str) -> bool:
    """A hidden temporary of one of our outputs whose writer has ended (or of an older emvsbayes, without pid)."""
    if not name.endswith(".tmp") or not any(name.startswith(f".{output}.") for output in TEMPORARY_NAMES):
        return False
    pids = [part[3:] for part in name[1:-4].split(".") if part.startswith("pid") and part[3:].isdigit()]
    return not (pids and process_alive(pids[0]))


class OutputFolder:
    """An output folder held by one command for as long as it writes there.

    ``with OutputFolder(out, "run") as folder:`` creates ``out`` if needed, takes the lock, refuses
    names it may not replace, removes what killed runs left; ``folder.new_unit()`` gives a fresh unit
    folder to write the files into and ``folder.publish(unit)`` makes them current together.
    """

    def __init__(self, folder, kind: str, owner: str | None = None):
        self.folder = Path(folder)
        self.kind = kind
        # the spec whose outputs these are: a folder holding another spec's results is refused (a rerun of the
        # same spec replaces its own; a results file copied there from another run must not be lost)
        self.owner = owner
        self.meta = self.folder / META
        self._fd: int | None = None
        self._created: list[Path] = []
        self._units: list[Path] = []
        self._published = False

    # -- holding the folder

    def __enter__(self) -> OutputFolder:
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not self.meta.exists():
                missing.append(self.meta)
            self.meta.mkdir(exist_ok=True)
        except OSError as error:
            raise UserError(f"{self.folder}: cannot write the report there ({why_not_writable(self.folder, error)}); "
                            f"choose another folder with {out_option()}") from None
        self._created = missing
        try:
            self._fd = _acquire(self.meta / LOCK, self.folder)
        except OSError as error:
            raise UserError(f"{self.folder}: cannot write the report there ({why_not_writable(self.folder, error)}); "
                            f"choose another folder with {out_option()}") from None
        try:
            self.check()
            self.clean()
            self._probe_writes()
        except BaseException:
            self._close()
            raise
        return self

    def _probe_writes(self) -> None:
        """Refuse, before any work, a folder (or its ``.emvsbayes``) where the outputs could not be written: a
        lock file that can be opened says nothing of its folder (root without its override of permissions,
        a folder made read-only after an earlier run), and the fit would be lost at publishing."""
        for folder in (self.folder, self.meta):
            probe = folder / f".write-test-{os.getpid()}"
            try:
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as error:
                fix = f"choose another folder with {out_option()}" if folder == self.folder else \
                    f"fix its permissions (it holds the outputs' files) or choose another folder with {out_option()}"
                raise UserError(f"{folder}: cannot write the report there ({error.strerror}); {fix}") from None

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close()

    def _close(self) -> None:
        published = self._published
        for unit in self._units:
            shutil.rmtree(unit, ignore_errors=True)  # written but never published
        self._units = []
        if self._fd is None:
            return
        # A command that failed in a folder it created leaves no trace (the lock file goes first, while held).
        if not published and self.meta in self._created and not self.current_unit():
            for leftover in (self.meta / LOCK,):
                leftover.unlink(missing_ok=True)
        _release(self._fd)
        self._fd = None
        if not published:
            for path in sorted(self._created, key=lambda p: len(p.parts), reverse=True):
                try:
                    path.rmdir()  # only when empty
                except OSError:
                    break

    def check(self) -> None:
        """Refuse (before any work) a folder holding files this command may not replace."""
        roles = {RESULTS_NAMES[self.kind]: "results", "index.html": "page"}
        for name, role in roles.items():
            reason = foreign(self.folder / name, role)
            if reason:
                raise UserError(f"{self.folder / name}: {reason}, so emvsbayes will not write over it; "
                                f"move it away or choose another folder with {out_option()}")
        results = self.folder / RESULTS_NAMES[self.kind]
        held = results_owner(results) if self.owner and os.path.lexists(results) else None
        if held is not None and held != self.owner:
            raise UserError(f"{results}: holds the results of the spec {held!r}, and a run of {self.owner!r} would "
                            f"replace them; choose another folder with {out_option()} (or move them away)")
        for kind, results_name in RESULTS_NAMES.items():
            if kind != self.kind and self.folder.joinpath(results_name).exists() \
                    and foreign(self.folder / results_name, "results") is None:
                raise UserError(f"{self.folder}: holds the outputs of an emvsbayes {kind} ({results_name}); "
                                f"choose another folder with {out_option()} for this {self.kind}")

    def clean(self) -> None:
        """Remove what killed commands left: stale temporaries, units that never became (or no longer are) current."""
        current = self.current_unit()
        for folder in (self.folder, self.meta):
            for path in folder.iterdir():
                if _stale_temporary(path.name) or (path.name.startswith(".write-test-")
                                                   and not process_alive(path.name.rsplit("-", 1)[-1])):
                    path.unlink(missing_ok=True)
        for path in self.meta.iterdir():
            if path.name.startswith(f"{CURRENT}.") and path.is_symlink():
                path.unlink(missing_ok=True)  # a switch link made but not renamed
            elif path.name.startswith(UNIT_PREFIX) and path.is_dir() and path != current:
                shutil.rmtree(path, ignore_errors=True)

    def current_unit(self) -> Path | None:
        link = self.meta / CURRENT
        try:
            target = os.readlink(link)
        except OSError:
            return None
        if not target.startswith(UNIT_PREFIX) or "/" in target:
            return None  # not a link this module made: never followed (units are removed through it)
        unit = self.meta / target
        return unit if unit.is_dir() else None

    # -- writing a unit

    def new_unit(self) -> Path:
        unit = self.meta / f"{UNIT_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        unit.mkdir()
        self._units.append(unit)
        return unit

    def publish(self, unit: Path) -> None:
        """Make ``unit``'s files the folder's outputs, all at once (one rename)."""
        names = [name for name in KINDS[self.kind] if (unit / name).is_file()]
        manifest = {"kind": self.kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "files": {name: file_sha256(unit / name) for name in names}}
        (unit / UNIT_MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _fsync_folder(unit)
        self._adopt_plain_files()
        previous = self.current_unit()
        # Links first, while they still point into the previous unit (or nowhere): they show nothing new.
        for name in names:
            self._link(name)
        switch = self.meta / f"{CURRENT}.{os.getpid()}.new"
        switch.unlink(missing_ok=True)
        os.symlink(unit.name, switch)
        os.replace(switch, self.meta / CURRENT)
        _fsync_folder(self.meta)
        self._units.remove(unit)
        self._published = True
        for name in KINDS[self.kind]:
            if name not in names and _our_link(self.folder / name):
                (self.folder / name).unlink()  # the new unit has no such file: no dangling link
        if previous is not None and previous != unit:
            shutil.rmtree(previous, ignore_errors=True)

    def _link(self, name: str) -> None:
        path = self.folder / name
        if _our_link(path):
            return
        tmp = self.folder / f".{name}.pid{os.getpid()}.link.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(f"{META}/{CURRENT}/{name}", tmp)
        os.replace(tmp, path)

    def _adopt_plain_files(self) -> None:
        """Turn outputs written as plain files (by an older emvsbayes) into a unit, content unchanged.

        A unit of hard links to the current files is made current first, so that each plain file can
        then be replaced by a link that shows the very same bytes.
        """
        plain = [name for name in KINDS[self.kind] if (self.folder / name).is_file() and not (self.folder / name).is_symlink()]
        if not plain:
            return
        previous = self.current_unit()
        unit = self.new_unit()
        for name in KINDS[self.kind]:
            source = self.folder / name if name in plain else (previous / name if previous else None)
            if source is not None and source.is_file():
                link_or_copy(source, unit / name)
        switch = self.meta / f"{CURRENT}.{os.getpid()}.new"
        switch.unlink(missing_ok=True)
        os.symlink(unit.name, switch)
        os.replace(switch, self.meta / CURRENT)
        self._units.remove(unit)
        for name in plain:
            self._link(name)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link (same bytes, no copy) where the filesystem allows one, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
