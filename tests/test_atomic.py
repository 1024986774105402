"""Atomic outputs: a run killed with SIGKILL at any moment leaves no partial results or report.

``emvsbayes run models/lecture_coins.toml`` is started and killed (the whole process group, so the
bootstrap's worker processes too) at chosen and at seeded random moments. Afterwards the output
folder may hold nothing, the previous complete files, or new complete ones (``results.nc`` readable
by ``read_results``, ``index.html`` ending in ``</html>``); the only other files allowed are the
hidden temporaries of ``atomic_write``, which are never read and are removed by the next run.
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


def assert_only_complete_outputs(out, old: dict[str, bytes] | None = None) -> dict[str, str]:
    """Every visible file is a complete output (the old one or a new readable one); returns what each is."""
    state = {}
    if not out.exists():
        return state
    for path in out.iterdir():
        if path.name.startswith("."):
            assert HIDDEN_TEMPORARY.match(path.name), f"unexpected hidden file {path.name}"
            continue
        assert path.name in ("results.nc", "index.html"), f"unexpected file {path.name}"
        content = path.read_bytes()
        if old is not None and content == old.get(path.name):
            state[path.name] = "old"
        elif path.name == "results.nc":
            read_results(path)  # raises on a truncated or half-written file
            state[path.name] = "new"
        else:
            assert content.rstrip().endswith(b"</html>"), "index.html is cut short"
            state[path.name] = "new"
    return state


def temporaries(out, name):
    return list(out.glob(f".{name}.*.tmp"))


@pytest.mark.slow
def test_killed_runs_leave_only_complete_outputs(lecture_run, tmp_path):
    # 1. A first run into an empty folder, killed while results.nc is being written.
    fresh = tmp_path / "fresh"
    proc = start_run(fresh)
    killed = kill_when(proc, lambda: fresh.exists() and temporaries(fresh, "results.nc"))
    state = assert_only_complete_outputs(fresh)
    if killed:
        assert "index.html" not in state  # the report comes after the results

    # 2. A rerun over a previous complete output (plus stale temporaries of a killed run), killed at a
    #    seeded random moment after it has cleaned up.
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    old = {}
    for name in ("results.nc", "index.html"):
        shutil.copy(lecture_run / name, rerun / name)
        old[name] = (rerun / name).read_bytes()
    stale = [rerun / ".results.nc.killed.tmp", rerun / ".index.html.killed.tmp", rerun / ".write-test-99999999"]
    for path in stale:
        path.write_bytes(b"half")
    proc = start_run(rerun)
    start = time.monotonic()
    kill_when(proc, lambda: not any(path.exists() for path in stale))
    cleaned_after = time.monotonic() - start
    assert not any(path.exists() for path in stale), "stale temporaries were not removed at the start of the run"
    proc = start_run(rerun)
    delay = float(RNG.uniform(cleaned_after, cleaned_after + 12.0))
    time.sleep(delay)
    if proc.poll() is None:
        kill(proc)
    assert set(assert_only_complete_outputs(rerun, old)) == {"results.nc", "index.html"}

    # 3. Killed between the two renames: the new results are in place, the report not yet.
    inode = (rerun / "results.nc").stat().st_ino

    def results_replaced():
        try:
            return (rerun / "results.nc").stat().st_ino != inode
        except FileNotFoundError:  # never expected: os.replace swaps the name in one step
            return True

    proc = start_run(rerun)
    killed = kill_when(proc, results_replaced, poll=0.002)
    state = assert_only_complete_outputs(rerun, old)
    assert set(state) == {"results.nc", "index.html"}
    if killed:
        assert state["results.nc"] == "new"
