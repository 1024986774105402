"""Atomic outputs: a run killed with SIGKILL at any moment leaves no partial results or report, and never
a results file beside a page of another run.

``emvsbayes run models/lecture_coins.toml`` is started and killed (the whole process group, so the
bootstrap's worker processes too) at chosen and at seeded random moments. Afterwards the output
folder may show nothing, the previous complete pair, or a new complete pair (``results.nc`` readable
by ``read_results``, ``index.html`` ending in ``</html>`` and naming the checksum of that very results
file); never one file of a pair without the other, nor an old file beside a new one. Hidden files
allowed: the ``.emvsbayes`` folder (lock and units) and temporaries, which the next run removes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT
from emvsbayes.results import read_results

SPEC = ROOT / "models" / "lecture_coins.toml"
HIDDEN_TEMPORARY = re.compile(r"^\.(results\.nc|index\.html)\..+\.tmp$|^\.write-test-\d+$")
RNG = np.random.default_rng(20240601)  # the random kill moments are seeded


def start_run(out):
    return subprocess.Popen([sys.executable, "-m", "emvsbayes", "run", str(SPEC), "--out", str(out), "--quiet"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})


def kill(proc) -> None:
    """SIGKILL the run and every process it started (its own process group), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def kill_when(proc, condition, timeout=300.0, poll=0.005) -> bool:
    """Kill ``proc`` as soon as ``condition()`` holds; False if the run ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            kill(proc)
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    kill(proc)
    raise AssertionError("the run neither reached the moment to kill it nor finished")


def page_results_checksum(page: bytes) -> str:
    head = page[:4096].decode("utf-8", errors="replace")
    tag = "<meta name='emvsbayes-results' content='"
    assert tag in head, "the page does not name the results it was rendered from"
    start = head.index(tag) + len(tag)
    return head[start:head.index("'", start)]


def assert_only_complete_outputs(out, old: dict[str, bytes] | None = None) -> dict[str, str]:
    """The folder shows nothing, the old pair or a new matched pair; returns what each file is."""
    if not out.exists():
        return {}
    for path in out.iterdir():
        if path.name.startswith("."):
            assert path.name == ".emvsbayes" or HIDDEN_TEMPORARY.match(path.name), f"unexpected hidden file {path.name}"
        else:
            assert path.name in ("results.nc", "index.html"), f"unexpected file {path.name}"
    # A link into a unit that is not (yet) current shows nothing: it counts as absent.
    shown = {name for name in ("results.nc", "index.html") if (out / name).is_file()}
    assert shown in (set(), {"results.nc", "index.html"}), f"one file of a pair without the other: {shown}"
    if not shown:
        return {}
    results, page = (out / "results.nc").read_bytes(), (out / "index.html").read_bytes()
    if old is not None and results == old["results.nc"]:
        assert page == old["index.html"], "the old results beside a new page"
        return {"results.nc": "old", "index.html": "old"}
    assert old is None or page != old["index.html"], "new results beside the old page"
    tree = read_results(out / "results.nc")  # raises on a truncated or half-written file
    assert page.rstrip().endswith(b"</html>"), "index.html is cut short"
    assert page_results_checksum(page) == tree.attrs["checksum"], "the page was rendered from other results"
    return {"results.nc": "new", "index.html": "new"}


def current_pair(out) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("results.nc", "index.html")}


def temporaries(out, name):
    """Temporaries of ``name`` being written, beside it or in a unit folder."""
    return list(out.glob(f".{name}.*.tmp")) + list(out.glob(f".emvsbayes/unit-*/.{name}.*.tmp"))


def results_written(out, inode) -> bool:
    """New results exist but the run has not published them yet (or, for an emvsbayes without units,
    results.nc has just been replaced)."""
    if any(not (unit / "unit.json").exists() for unit in out.glob(".emvsbayes/unit-*/results.nc")):
        return True
    try:
        return (out / "results.nc").stat().st_ino != inode
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_killed_runs_leave_only_complete_outputs(lecture_run, tmp_path):
    # 1. A first run into an empty folder, killed while results.nc is being written.
    fresh = tmp_path / "fresh"
    proc = start_run(fresh)
    killed = kill_when(proc, lambda: fresh.exists() and temporaries(fresh, "results.nc"))
    state = assert_only_complete_outputs(fresh)
    if killed:
        assert state == {}  # nothing is shown before the pair is complete

    # 2. A rerun over a previous complete output (plain files, as an older emvsbayes wrote them) plus
    #    what a killed run leaves, killed once it has cleaned up; then killed at seeded random moments.
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    for name in ("results.nc", "index.html"):
        shutil.copy(lecture_run / name, rerun / name)
    old = current_pair(rerun)
    stale_unit = rerun / ".emvsbayes" / "unit-killed"
    stale_unit.mkdir(parents=True)
    (stale_unit / "results.nc").write_bytes(b"half")
    stale = [rerun / ".results.nc.killed.tmp", rerun / ".index.html.killed.tmp", rerun / ".write-test-99999999",
             rerun / ".results.nc.pid99999999.x.tmp", stale_unit / "results.nc"]
    for path in stale[:-1]:
        path.write_bytes(b"half")
    proc = start_run(rerun)
    start = time.monotonic()
    kill_when(proc, lambda: not any(path.exists() for path in stale))
    cleaned_after = time.monotonic() - start
    assert not any(path.exists() for path in stale), "stale temporaries were not removed at the start of the run"
    assert set(assert_only_complete_outputs(rerun, old)) == {"results.nc", "index.html"}
    for delay in RNG.uniform(cleaned_after, cleaned_after + 25.0, size=3):
        old = current_pair(rerun)
        proc = start_run(rerun)
        try:  # killed at its moment, unless it ended before (no idle wait for a moment after the run's end)
            proc.wait(timeout=float(delay))
        except subprocess.TimeoutExpired:
            kill(proc)
        assert set(assert_only_complete_outputs(rerun, old)) == {"results.nc", "index.html"}

    # 3. Killed between writing the new results and publishing them with their page: the old pair stays.
    old = current_pair(rerun)
    inode = (rerun / "results.nc").stat().st_ino
    proc = start_run(rerun)
    killed = kill_when(proc, lambda: results_written(rerun, inode), poll=0.002)
    state = assert_only_complete_outputs(rerun, old)
    assert set(state) == {"results.nc", "index.html"}
    if killed:
        assert state["results.nc"] == "old"
