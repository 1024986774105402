"""Output folders (issue 22, "results lost" and the integrity checks): nothing written over an input, a
results file or a file emvsbayes did not write; one writer per folder; damaged files refused.

The commands run as a user runs them: ``python -m emvsbayes ...`` in a subprocess with warnings as they
come (``PYTHONWARNINGS`` is not set), and a refusal is exactly one stderr line and exit status 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from emvsbayes.errors import UserError

# A quick coin run (no bootstrap, short chains): for the tests that need a real run to finish.
QUICK_SPEC = """seed = 3
[data]
dataset = "coins_lecture"
[model]
family = "coins"
[em]
bootstrap = 0
[bayes]
chains = 2
draws = 100
tune = 100
"""


def run_user(*args, timeout=600):
    """The command line exactly as a user runs it: warnings not silenced."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-m", "emvsbayes", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env)


def assert_refused(proc, expected: str) -> None:
    """Exit status 2 and exactly one stderr line, ``emvsbayes: error: <expected>``."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.splitlines() == [f"emvsbayes: error: {expected}"], proc.stderr


def snapshot(folder):
    """Every file under ``folder`` (links as their targets) with its bytes; the lock file's pid left out."""
    state = {}
    for path in sorted(folder.rglob("*")):
        if path.name == "lock" and path.parent.name == ".emvsbayes":
            continue
        if path.is_symlink():
            state[str(path.relative_to(folder))] = ("link", os.readlink(path))
        elif path.is_file():
            state[str(path.relative_to(folder))] = path.read_bytes()
    return state


@pytest.fixture
def run_copy(lecture_run, tmp_path):
    """A copy of a finished run's folder (its links kept as links)."""
    folder = tmp_path / "run"
    shutil.copytree(lecture_run, folder, symlinks=True)
    return folder


# --- never over the results, an input, or a page of another run ----------------------------------------

def test_report_refuses_to_write_over_its_own_results_file(run_copy):
    results = run_copy / "results.nc"
    before = snapshot(run_copy)
    assert_refused(run_user("report", results, "--out", results),
                   f"{results}: is the results file being read, so emvsbayes will not write the report over it; "
                   f"choose another file with --out, e.g. --out {run_copy / 'report.html'}")
    assert snapshot(run_copy) == before


def test_a_run_refuses_a_folder_holding_another_specs_results(lecture_run, tmp_path):
    # A results file copied (cp -L) into a folder, then another spec run into it: the copy was replaced, gone.
    folder = tmp_path / "kept"
    folder.mkdir()
    shutil.copy(lecture_run / "results.nc", folder / "results.nc")
    spec = tmp_path / "other_spec.toml"
    spec.write_text('[data]\ndataset = "coins_lecture"\n[model]\nfamily = "coins"\n[bayes]\nenabled = false\n'
                    "[em]\nbootstrap = 0\n", encoding="utf-8")
    before = snapshot(folder)
    assert_refused(run_user("run", spec, "--out", folder),
                   f"{folder / 'results.nc'}: holds the results of the spec 'lecture_coins', and a run of 'other_spec' "
                   "would replace them; choose another folder with --out (or move them away)")
    assert snapshot(folder) == before


def test_report_never_writes_into_the_published_units_or_over_a_published_figure(run_copy, tmp_path):
    # --out .emvsbayes/current/index.html built a second .emvsbayes inside the unit and broke its checksums; --out
    # onto a study's coverage.svg replaced the figure's link with a page
    before = snapshot(run_copy)
    inside = run_copy / ".emvsbayes" / "current" / "index.html"
    assert_refused(run_user("report", run_copy / "results.nc", "--out", inside),
                   f"{inside}: is inside .emvsbayes, the folder where emvsbayes keeps the published outputs, so emvsbayes "
                   f"will not write over it; choose another file with --out, e.g. --out {run_copy / 'report.html'}")
    assert snapshot(run_copy) == before
    from emvsbayes.outputs import foreign

    (tmp_path / ".emvsbayes" / "current").mkdir(parents=True)
    (tmp_path / ".emvsbayes" / "current" / "figure.svg").write_text("<svg/>", encoding="utf-8")
    (tmp_path / "figure.svg").symlink_to(".emvsbayes/current/figure.svg")  # a link as a study publishes its figure
    assert foreign(tmp_path / "figure.svg", "page") == ("is one of the outputs published together there (a study's "
                                                        "figure), not a report page")


def test_report_refuses_to_write_over_another_results_file_or_a_users_file(run_copy, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_copy, other, symlinks=True)
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>", encoding="utf-8")
    before = snapshot(tmp_path)
    suggestion = f"choose another file with --out, e.g. --out {run_copy / 'report.html'}"
    assert_refused(run_user("report", run_copy / "results.nc", "--out", other / "results.nc"),
                   f"{other / 'results.nc'}: is a results file, not a report page, so emvsbayes will not write over "
                   f"it; {suggestion}")
    assert_refused(run_user("report", run_copy / "results.nc", "--out", notes),
                   f"{notes}: is not a report page written by emvsbayes, so emvsbayes will not write over it; "
                   f"{suggestion}")
    # Another run's page: writing it would pair that run's results with this run's page.
    assert_refused(run_user("report", run_copy / "results.nc", "--out", other / "index.html"),
                   f"{other / 'index.html'}: is the page of the outputs in {other}, not of {run_copy / 'results.nc'}; "
                   f"{suggestion}")
    assert snapshot(tmp_path) == before


def page_results_checksum(page_path) -> str:
    head = page_path.read_text(encoding="utf-8")[:4096]
    start = head.index("<meta name='emvsbayes-results' content='") + len("<meta name='emvsbayes-results' content='")
    return head[start:head.index("'", start)]


@pytest.mark.slow
def test_report_rerendered_beside_its_results_stays_a_matched_pair(run_copy):
    from emvsbayes.results import read_results

    proc = run_user("report", run_copy / "results.nc", "--quiet")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    checksum = read_results(run_copy / "results.nc").attrs["checksum"]
    assert checksum.startswith("sha256:") and page_results_checksum(run_copy / "index.html") == checksum
    assert sorted(p.name for p in run_copy.iterdir()) == [".emvsbayes", "index.html", "results.nc"]
    # One unit only: the previous one was removed once the new one was current.
    assert len([p for p in (run_copy / ".emvsbayes").iterdir() if p.name.startswith("unit-")]) == 1


@pytest.mark.parametrize(("name", "content"), [("index.html", b"heads,tosses\n5,10\n7,10\n8,10\n9,10\n4,10\n"),
                                               ("results.nc", b"my results, kept as text\n")])
def test_run_refuses_a_folder_holding_a_users_file_under_an_output_name(name, content, tmp_path):
    """The issue's case: the run's own input CSV is called index.html and lies in the output folder."""
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(content)
    data_name = "index.html" if name == "index.html" else "tosses.csv"
    if name != "index.html":
        (out / data_name).write_bytes(b"heads,tosses\n5,10\n7,10\n")
    spec = out / "spec.toml"
    spec.write_text(f'[data]\nfile = "{data_name}"\n[model]\nfamily = "coins"\n', encoding="utf-8")
    before = snapshot(out)
    what = "is not a report page written by emvsbayes" if name == "index.html" \
        else "is not a results file written by emvsbayes"
    assert_refused(run_user("run", spec, "--out", out),
                   f"{out / name}: {what}, so emvsbayes will not write over it; move it away or choose another "
                   "folder with --out")
    assert snapshot(out) == before  # not even the lock folder is left behind


def test_run_and_study_do_not_write_into_each_others_folders(run_copy, tmp_path):
    study = tmp_path / "study.toml"
    study.write_text('kind = "coverage"\nseed = 1\nreplicates = 2\n[model]\nfamily = "coins"\n', encoding="utf-8")
    before = snapshot(run_copy)
    assert_refused(run_user("study", study, "--out", run_copy),
                   f"{run_copy}: holds the outputs of an emvsbayes run (results.nc); choose another folder with --out "
                   "for this study")
    assert snapshot(run_copy) == before


# --- one writer per folder ---------------------------------------------------------------------------

def test_a_folder_held_by_another_command_is_refused_at_once(tmp_path):
    from emvsbayes.outputs import OutputFolder

    out = tmp_path / "out"
    spec = tmp_path / "quick.toml"
    spec.write_text(QUICK_SPEC, encoding="utf-8")
    with OutputFolder(out, "run"):  # this test process holds the folder, as a live run would
        proc = run_user("run", spec, "--out", out, timeout=120)
    assert_refused(proc, f"{out}: another emvsbayes command (pid {os.getpid()}) is writing there; wait for it to "
                         "finish or choose another folder with --out")
    assert not (out / "results.nc").exists() and not (out / "index.html").exists()


@pytest.mark.slow
def test_a_stale_lock_is_taken_and_a_live_runs_temporary_is_left_alone(tmp_path):
    """A lock file left by a killed run (its pid no longer alive, no lock held) does not block; a temporary
    file of a live writer (another process's pid in its name) is not deleted; a dead writer's is."""
    out = tmp_path / "out"
    (out / ".emvsbayes").mkdir(parents=True)
    (out / ".emvsbayes" / "lock").write_text("99999999\n")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live_temporary = out / f".results.nc.pid{live.pid}.abc123.tmp"
        live_temporary.write_bytes(b"being written")
        dead_temporary = out / ".results.nc.pid99999999.abc123.tmp"
        dead_temporary.write_bytes(b"left by a killed run")
        spec = tmp_path / "quick.toml"
        spec.write_text(QUICK_SPEC, encoding="utf-8")
        proc = run_user("run", spec, "--out", out, "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert live_temporary.read_bytes() == b"being written"
        assert not dead_temporary.exists()
    finally:
        live.kill()
        live.wait()
    from emvsbayes.results import read_results

    assert page_results_checksum(out / "index.html") == read_results(out / "results.nc").attrs["checksum"]


# --- damaged files ---------------------------------------------------------------------------------------

def flip_bytes_in_array(path, group: str, name: str, n_bytes: int = 16) -> None:
    """Invert ``n_bytes`` bytes in the middle of one stored array (the HDF5 structure stays readable)."""
    import h5py

    with h5py.File(path, "r") as handle:
        dataset = handle[f"{group}/{name}"] if group else handle[name]
        offset, size = dataset.id.get_offset(), dataset.id.get_storage_size()
    assert offset is not None and size >= 4 * n_bytes, (offset, size)
    with open(path, "r+b") as handle:
        handle.seek(offset + size // 2)
        chunk = handle.read(n_bytes)
        handle.seek(offset + size // 2)
        handle.write(bytes(b ^ 0xFF for b in chunk))


def test_a_results_file_with_flipped_bytes_is_refused(lecture_run, tmp_path):
    results = tmp_path / "results.nc"
    shutil.copy(lecture_run / "results.nc", results)
    flip_bytes_in_array(results, "posterior", "theta")
    assert_refused(run_user("report", results),
                   f"{results}: damaged or edited (its arrays or attributes do not match the checksum written with them, "
                   "and emvsbayes reads results only as it wrote them); rerun the spec to "
                   "write it again")
    assert not (tmp_path / "index.html").exists()


def without_checksum(source, target, edit=None):
    """A copy of the results file ``source`` at ``target`` without its checksum attribute, as files written before
    checksums existed are (and as an edited file whose checksum was removed is), edited by ``edit(h5py file)``."""
    import h5py

    shutil.copy(source, target)
    with h5py.File(target, "r+") as handle:
        del handle.attrs["checksum"]
        if edit is not None:
            edit(handle)
    return target


def _set_first(dataset: str, value: float):
    def edit(handle):
        values = handle[dataset][...]
        values.flat[0] = value
        handle[dataset][...] = values
    return edit


def test_a_results_file_without_its_checksum_is_drawn_as_written(lecture_run, tmp_path):
    results = without_checksum(lecture_run / "results.nc", tmp_path / "results.nc")
    proc = run_user("report", results, "--out", tmp_path / "page.html")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert (tmp_path / "page.html").stat().st_size > 10_000


UNCHECKED_BECAUSE = ("the file has no checksum, so it was edited or not written by this emvsbayes; rerun the spec with "
                     "'emvsbayes run'")
#: edits of a results file without its checksum that the reader refuses, and what it says
UNCHECKED_EDITS = {
    "theta removed": (lambda handle: handle.__delitem__("em/theta"), "the group 'em' lacks the parameter 'theta'"),
    "posterior draw NaN": (_set_first("posterior/theta", np.nan),
                           "posterior/theta holds values that are not finite numbers (NaN or infinite)"),
    "weight infinite": (_set_first("em/w", np.inf), "em/w holds values that are not finite numbers (NaN or infinite)"),
    "family unknown": (lambda handle: handle.attrs.__setitem__("family", "binomial"),
                       "names no model family emvsbayes knows ('binomial')"),
    "family removed": (lambda handle: handle.attrs.__delitem__("family"), "names no model family"),
    "parameters not a list": (lambda handle: handle.attrs.__setitem__("parameters", "{theta"),
                              "its list of parameters is missing or not a list of names"),
}


@pytest.mark.parametrize("edit", UNCHECKED_EDITS)
def test_an_edited_results_file_without_its_checksum_is_refused_before_drawing(lecture_run, tmp_path, edit):
    from emvsbayes.results import read_results

    change, expected = UNCHECKED_EDITS[edit]
    results = without_checksum(lecture_run / "results.nc", tmp_path / "results.nc", change)
    with pytest.raises(UserError) as excinfo:
        read_results(results)
    assert str(excinfo.value) == f"{results}: {expected}; {UNCHECKED_BECAUSE}"


def test_an_edited_results_file_without_its_checksum_that_cannot_be_drawn_is_one_line(lecture_run, tmp_path):
    # a negative weight passes the reader's checks; drawing it takes its logarithm (NumPy's RuntimeWarning)
    results = without_checksum(lecture_run / "results.nc", tmp_path / "results.nc", _set_first("em/w", -0.5))
    before = results.read_bytes()
    assert_refused(run_user("report", results, "--out", tmp_path / "page.html"),
                   f"{results}: cannot be drawn (RuntimeWarning: invalid value encountered in log); {UNCHECKED_BECAUSE}")
    assert not (tmp_path / "page.html").exists() and results.read_bytes() == before


def test_a_study_file_with_flipped_bytes_is_refused(tmp_path):
    import xarray as xr

    from emvsbayes.study.run import STUDY_FORMAT, read_study, write_study

    path = tmp_path / "study.nc"
    write_study(xr.Dataset({"coverage": ("cell", np.linspace(0.1, 0.9, 64))}, attrs={"format": STUDY_FORMAT}), path)
    assert float(read_study(path)["coverage"][3]) == pytest.approx(0.1 + 0.8 * 3 / 63)
    flip_bytes_in_array(path, "", "coverage")
    with pytest.raises(UserError) as excinfo:
        read_study(path)
    assert str(excinfo.value) == (f"{path}: damaged or edited (its arrays or attributes do not match the checksum written with them, "
                                  "and emvsbayes reads results only as it wrote them); run the "
                                  "study again to write it again")


def test_store_records_are_checked_for_their_place_their_study_and_their_content(tmp_path):
    from emvsbayes.study.run import load_record, record_path, write_record

    record = {"cell": 0, "replicate": 1, "status": "ok", "error": None, "values": {"em_error": {"theta[0]": 0.125}},
              "scalars": {"rhat": 1.0}, "timings": {"em": 0.5}, "compiled": 0, "worker": "host:1"}
    path = write_record(tmp_path, record, "fingerprint-a")
    assert load_record(tmp_path, 0, 1, "fingerprint-a")["values"] == record["values"]
    assert load_record(tmp_path, 0, 2, "fingerprint-a") is None  # not stored: to be run
    fix = "delete it and run the study again to recompute that replicate"
    with pytest.raises(UserError) as excinfo:  # a record of another study put into this store
        load_record(tmp_path, 0, 1, "fingerprint-b")
    assert str(excinfo.value) == f"{path}: damaged or from another study (it does not match its checksum); {fix}"
    path.write_text('{"cell": 0, "replica', encoding="utf-8")
    with pytest.raises(UserError) as excinfo:
        load_record(tmp_path, 0, 1, "fingerprint-a")
    assert str(excinfo.value) == f"{path}: damaged (not a readable record); {fix}"
    assert record_path(tmp_path, 0, 1) == path


def test_the_reports_index_is_not_written_over_a_users_page_or_a_runs_own_page(tmp_path):
    from emvsbayes.report import refresh_index

    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "index.html").write_text("<p>my own list of runs</p>", encoding="utf-8")
    assert refresh_index(reports) is None
    assert (reports / "index.html").read_text(encoding="utf-8") == "<p>my own list of runs</p>"
    (reports / "index.html").unlink()
    assert refresh_index(reports) == reports / "index.html"
    assert refresh_index(reports) == reports / "index.html"  # an index of ours is refreshed
    (reports / "index.html").unlink()
    (reports / "index.html").symlink_to(".emvsbayes/current/index.html")  # the folder is itself a run's
    assert refresh_index(reports) is None and (reports / "index.html").is_symlink()


def test_links_in_the_output_machinery_that_emvsbayes_did_not_make_are_never_followed(tmp_path):
    """A ``current`` link pointing out of the folder is not a unit (publishing removes the previous unit,
    so following it would delete a folder of the user's); a lock file that is a link is not written through."""
    from emvsbayes.outputs import OutputFolder

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").write_text("keep", encoding="utf-8")
    out = tmp_path / "out"
    (out / ".emvsbayes").mkdir(parents=True)
    (out / ".emvsbayes" / "current").symlink_to("../../victim")
    with OutputFolder(out, "run") as folder:
        unit = folder.new_unit()
        (unit / "results.nc").write_bytes(b"new results")
        (unit / "index.html").write_bytes(b"new page")
        folder.publish(unit)
    assert (victim / "file").read_text(encoding="utf-8") == "keep"
    assert (out / "results.nc").read_bytes() == b"new results" and (out / "index.html").read_bytes() == b"new page"

    precious = tmp_path / "precious.txt"
    precious.write_text("precious", encoding="utf-8")
    linked = tmp_path / "linked"
    (linked / ".emvsbayes").mkdir(parents=True)
    (linked / ".emvsbayes" / "lock").symlink_to(precious)
    with pytest.raises(UserError, match="cannot write the report there"):
        OutputFolder(linked, "run").__enter__()
    assert precious.read_text(encoding="utf-8") == "precious"
