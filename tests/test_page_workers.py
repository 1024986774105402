"""The page worker (emvsbayes/report/workers.py): a run's page drawn beside the run, in two processes.

Oracle: the page drawn in one process by ``render_report``, byte for byte. Every part of a page salts its
figures' ids by its own name (emvsbayes/report/figures.py ``new_part``), so where a part is drawn cannot
change a byte. The suite runs with the workers off (tests/conftest.py); these tests turn them on.
"""

import json
import re

import pytest
from conftest import ROOT, _user_env, quick_run_group, run_cli

from emvsbayes.report.page import assemble_page
from emvsbayes.report.render import render_report
from emvsbayes.report.workers import WORKERS_VARIABLE, PageWorkers, render_report_file
from emvsbayes.results import read_results

#: stand-ins for the seconds the reproducibility table shows (writing results.nc, drawing the page)
TIMINGS = {"write": 0.25, "report": "drawing-seconds"}


def without_seconds(page: str) -> str:
    """The page without its reproducibility section, whose table holds how long writing and drawing took."""
    return re.sub(r'<section id="reproducibility">.*?</section>', "", page, flags=re.S)


@pytest.mark.slow  # each needs a bundled spec's quick run (5-15 s), shared with the slow tests that read it
@pytest.mark.parametrize(("name", "count"), [pytest.param(name, count, marks=quick_run_group(name))
                                           for name, count in (("two_coins", 1), ("two_coins", 2), ("faithful", 2),
                                                               ("heroes", 2))])
def test_the_workers_draw_the_page_one_process_draws(quick_run, name, count):
    tree = quick_run(name).tree
    parts = PageWorkers.start(count).render_parts(tree, TIMINGS)
    assert parts is not None
    assert assemble_page(tree, parts) == render_report(tree, TIMINGS)


@pytest.mark.slow  # a worker started (its imports: 2-3 s of CPU) and the page drawn twice
def test_a_familys_own_sections_come_from_the_workers_alike():
    # the HMM family adds sections of its own (the "family" part), placed among the others; the earthquake
    # HMM's results tree as tests/test_hmm_family.py builds it for its page
    from test_hmm_family import _results_tree

    tree, fit, _ = _results_tree(True)
    tree["em"] = tree["em"].to_dataset().assign(loglik=fit.loglik)
    tree.attrs["family"] = "hmm"
    parts = PageWorkers.start(2).render_parts(tree, TIMINGS)
    assert parts is not None and parts["family"]
    assert assemble_page(tree, parts) == render_report(tree, TIMINGS)


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param("two_coins", marks=quick_run_group("two_coins"))])
def test_a_worker_that_died_leaves_the_page_to_the_run(quick_run, name, tmp_path):
    tree = quick_run(name).tree
    workers = PageWorkers.start(2)
    workers._process.kill()
    assert workers.render_parts(tree, TIMINGS) is None
    workers = PageWorkers.start(2)
    workers._process.kill()
    path = render_report_file(tree, tmp_path / "index.html", {"write": 0.25}, workers=workers)
    assert without_seconds(path.read_text(encoding="utf-8")) == without_seconds(render_report(tree, TIMINGS))


@pytest.mark.slow  # a worker started (its imports: 2-3 s of CPU)
def test_a_worker_that_fails_says_nothing_and_leaves_the_page_to_the_run(capfd):
    # A worker asked for a split it has not (3 processes) fails after its imports, as one in a broken
    # environment would: it prints no traceback (the run draws the page itself and reports what fails there).
    from test_hmm_family import _results_tree

    tree, _, _ = _results_tree(False)
    workers = PageWorkers.start(3)
    assert workers.render_parts(tree, TIMINGS) is None
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.slow
def test_a_run_as_users_start_it_draws_its_page_in_the_workers(tmp_path):
    # `emvsbayes run` in a fresh interpreter with the variable unset (the default on this 2-core machine): the
    # run's own process imports no plotting library, the page is the one drawn in one process, and nothing
    # is said on the terminal.
    env = _user_env()
    env.pop(WORKERS_VARIABLE, None)
    code = f"""
import json, sys
from emvsbayes.cli import main
status = main(["run", {str(ROOT / "models" / "two_coins.toml")!r}, "--out", {str(tmp_path / "out")!r}, "--quiet"])
print(json.dumps({{"status": status, "plotting": sorted(m for m in ("matplotlib", "arviz_plots") if m in sys.modules)}}))
"""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"status": 0, "plotting": []}
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    tree = read_results(tmp_path / "out" / "results.nc")
    assert '<section id="reproducibility">' in page
    assert without_seconds(page) == without_seconds(render_report(tree, TIMINGS))


def test_a_bad_worker_count_is_one_line_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", ROOT / "models" / "two_coins.toml", "--out", out, "--quiet", env={WORKERS_VARIABLE: "4"})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and WORKERS_VARIABLE in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
