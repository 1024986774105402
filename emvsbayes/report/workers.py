"""The page worker: a run's page drawn in another process, which starts while the run fits.

Drawing a page takes matplotlib and arviz-plots (about 1.5 s of imports with arviz-stats) and 1.4-1.9 s of
drawing on this kind of machine, half of it the posterior's trace and rank plots. A worker process,
started when the fit begins at a lower priority, imports the drawing code on the core the fit leaves idle.
When the results are written it is handed the results tree and splits itself in two (``fork``: both
halves have the drawing code imported), each drawing one share of the page's parts (:data:`SHARES`) at
once; the run's own process assembles the page (:func:`emvsbayes.report.page.assemble_page`) and never
imports a plotting library.

Every part is the same bytes whichever process draws it (:func:`emvsbayes.report.figures.new_part`), so
the page is the one the run's process would draw itself, which it does whenever the worker is off or
fails (a worker that died, an error in a part: the page is drawn again here and fails here as it would
have). The worker is given the results tree as it was read back from ``results.nc``: it draws from the
results file's contents and nothing else.

The worker is used when this process may run on two or more CPUs. ``EMVSBAYES_PAGE_WORKERS=0`` turns it
off (for instance under a test runner that already keeps every core busy); ``1`` draws the page in one
worker process without splitting it, ``2`` (the default) in two.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import xarray as xr

from emvsbayes.errors import UserError
from emvsbayes.report.page import PART_NAMES, assemble_page
from emvsbayes.results import atomic_write

#: the environment variable that sets how many processes draw a run's page apart from the run's own (0: none)
WORKERS_VARIABLE = "EMVSBAYES_PAGE_WORKERS"
#: how much lower than the run's the worker's scheduling priority is (``nice``)
WORKER_NICENESS = 10
#: the parts of a page each drawing process draws, by number of processes: with two, the posterior's
#: section (its trace and rank plots are about half of a page's drawing) and all the rest
SHARES = {
    1: (PART_NAMES,),
    2: (("bayes",), tuple(name for name in PART_NAMES if name != "bayes")),
}


def wanted_workers() -> int:
    """How many processes draw the page: :data:`WORKERS_VARIABLE` if set, else 2 when this process may run on
    two or more CPUs, else 0."""
    value = os.environ.get(WORKERS_VARIABLE, "").strip()
    if value:
        if value not in ("0", "1", "2"):
            raise UserError(f"{WORKERS_VARIABLE}={value!r}: give 0 (draw the page in the run's own process), 1 or 2 "
                            "(processes that draw it beside the run), or leave it unset (2 on a machine with two or "
                            "more cores)")
        return int(value)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 if cpus >= 2 else 0


class PageWorkers:
    """A started worker process; :meth:`render_parts` hands it a tree once."""

    def __init__(self, process: subprocess.Popen):
        self._process = process

    @classmethod
    def start(cls, count: int | None = None) -> PageWorkers | None:
        """Start the worker that draws with ``count`` processes (default :func:`wanted_workers`); None when 0."""
        count = wanted_workers() if count is None else count
        if count == 0:
            return None
        env = dict(os.environ)
        # the worker imports this same emvsbayes, wherever this process found it
        package_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [env.get("PYTHONPATH")])])
        # Drawing wants no BLAS threads, and only a process without threads splits itself safely (fork):
        # pyarrow (imported by pandas, under xarray) starts a jemalloc thread unless told not to.
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
        env["MPLBACKEND"] = "Agg"  # SVG only; not the caller's backend (a notebook's inline one, a GUI)
        env["JE_ARROW_MALLOC_CONF"] = "background_thread:false"
        # A session of its own: Ctrl-C in the terminal reaches the run, not the worker, which exits when
        # the run's end closes its input.
        try:
            process = subprocess.Popen([sys.executable, "-m", "emvsbayes.report.workers", str(count)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        except (OSError, ValueError):  # no interpreter to start (an embedded Python): the run draws its page
            return None
        return cls(process)

    def render_parts(self, tree, extra_timings: Mapping[str, object] | None) -> dict[str, object] | None:
        """Every part of ``tree``'s page, drawn by the worker; None if it failed (the caller then draws the page
        itself). The worker is done afterwards."""
        process = self._process
        try:
            process.stdin.write(pickle.dumps((tree, dict(extra_timings or {})), protocol=pickle.HIGHEST_PROTOCOL))
            process.stdin.close()
            status, parts = pickle.load(process.stdout)
        except (OSError, EOFError, pickle.PickleError, ValueError, TypeError, AttributeError):
            return None
        finally:
            self.close()
        return parts if status == "parts" and set(parts) == set(PART_NAMES) else None

    def close(self) -> None:
        """Stop the worker (at once: one that is still importing or drawing is killed)."""
        process = self._process
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None and not stream.closed:
                stream.close()


@contextlib.contextmanager
def page_workers(wanted: bool = True) -> Iterator[PageWorkers | None]:
    """The page worker (:meth:`PageWorkers.start`) while the block runs, if ``wanted``; stopped at its end."""
    workers = PageWorkers.start() if wanted else None
    try:
        yield workers
    finally:
        if workers is not None:
            workers.close()


def render_report_file(tree: xr.DataTree, path, extra_timings=None, workers=None) -> Path:
    """Render and write atomically (a crash leaves the previous report, never half a page). The page
    shows how long rendering it took, next to the run's own stages (:func:`~emvsbayes.report.render.render_report`
    alone is deterministic: same results, same page).

    ``workers`` (:class:`PageWorkers`, started while the results were computed)
    draw the parts in other processes; the page is the same bytes as one drawn here, which happens when
    there are none or they fail.
    """
    started = time.perf_counter()
    # A token no page contains stands in for the rendering time until it is known.
    token = f"render-seconds-{uuid.uuid4().hex}"
    timings = {**(extra_timings or {}), "report": token}
    parts = workers.render_parts(tree, timings) if workers is not None else None
    if parts is None:
        from emvsbayes.report.render import render_parts  # imports matplotlib and arviz-plots

        parts = render_parts(tree, PART_NAMES, timings)
    page = assemble_page(tree, parts).replace(token, f"{time.perf_counter() - started:.3g}", 1)
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def _draw(render, tree, names, extra_timings) -> tuple[str, object]:
    try:
        return "parts", render.render_parts(tree, names, extra_timings)
    except Exception as error:  # drawn again by the run itself, which then reports the error as it would
        return "error", f"{type(error).__name__}: {error}"


def _single_threaded() -> bool:
    """Whether this process runs one thread (counted by Linux; elsewhere not known, so no)."""
    try:
        return hasattr(os, "fork") and len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _draw_split(render, tree, shares, extra_timings) -> tuple[str, object]:
    """The shares drawn at once, the first by a forked copy of this process (which has everything imported);
    one after the other where a copy cannot be made safely (another thread, another system)."""
    if len(shares) == 1 or not _single_threaded():
        return _draw(render, tree, [name for share in shares for name in share], extra_timings)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: draw the first share, send it, and leave without running the parent's exit code
        status = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as out:
                pickle.dump(_draw(render, tree, shares[0], extra_timings), out, protocol=pickle.HIGHEST_PROTOCOL)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    mine = _draw(render, tree, [name for share in shares[1:] for name in share], extra_timings)
    try:
        with os.fdopen(read_end, "rb") as incoming:
            theirs = pickle.load(incoming)
    except (EOFError, pickle.PickleError):
        theirs = ("error", "the process that drew the first share ended without sending it")
    os.waitpid(pid, 0)
    for status, value in (theirs, mine):
        if status != "parts":
            return status, value
    return "parts", {**theirs[1], **mine[1]}


def _serve(count: int) -> int:
    """The worker: import the drawing code, then draw the page of the tree read from standard input with
    ``count`` processes and write ("parts", {name: part}) to standard output (("error", text) if a part failed)."""
    # Standard output is the channel back; anything printed goes to standard error instead.
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Below the run's priority: the imports fill the core the fit leaves idle instead of slowing the fit.
    if hasattr(os, "nice"):
        os.nice(WORKER_NICENESS)
    from emvsbayes.report import render

    import arviz  # noqa: F401  the trace and rank plots' library, imported while the run still fits

    render.warm_up()
    try:
        tree, extra_timings = pickle.load(sys.stdin.buffer)
    except EOFError:
        return 0  # the run ended (or failed) before its page: nothing to draw
    pickle.dump(_draw_split(render, tree, SHARES[count], extra_timings), channel, protocol=pickle.HIGHEST_PROTOCOL)
    channel.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_serve(int(sys.argv[1])))
    except Exception:  # noqa: BLE001 - the run draws the page itself and reports what fails there, once
        sys.exit(1)
