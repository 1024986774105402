"""Work a study does once that it used to do twice (issue 21 item 7: what follows the last replicate is time
no second worker divides)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emvsbayes.study import read_study
from emvsbayes.study import report

ROOT = Path(__file__).resolve().parents[1]


def test_the_page_and_coverage_svg_share_one_drawing_of_the_rung_figure(tmp_path, monkeypatch):
    # The page inlined the figure of every interval against N and coverage.svg drew it again (a second of
    # matplotlib after the last replicate); now it is drawn once and the same SVG goes to both.
    calls = []
    draw = report.rung_figure

    def counted(ds, axes):
        calls.append(1)
        return draw(ds, axes)

    monkeypatch.setattr(report, "rung_figure", counted)
    page = report.render_study_report(read_study(ROOT / "studies" / "coverage_ladder" / "study.nc"), tmp_path / "index.html")
    assert len(calls) == 1
    # a study file written before family titles: the family named by its id
    assert "coverage study of gaussian models" in page.read_text(encoding="utf-8")
    svg = (tmp_path / "coverage.svg").read_text(encoding="utf-8")
    assert "<svg" in svg
    assert svg in page.read_text(encoding="utf-8")


def test_write_study_returns_the_file_as_read_back_for_the_page(tmp_path):
    # The page is rendered from what write_study read back and hashed, not from a second read of study.nc.
    import numpy as np
    import xarray as xr

    from emvsbayes.study.run import STUDY_FORMAT, write_study

    ds = xr.Dataset({"coverage": ("cell", np.linspace(0.1, 0.9, 4))}, attrs={"format": STUDY_FORMAT, "kind": "coverage"})
    written = write_study(ds, tmp_path / "study.nc")
    again = read_study(tmp_path / "study.nc")
    assert written is not None and written.attrs["checksum"] == again.attrs["checksum"]
    xr.testing.assert_identical(written, again)


# The program-building worker compiles the executables under the lock (cold caches): run in a fresh process,
# since JAX reads its cache folder once per process.
_BUILDER = """
import json, sys
from pathlib import Path

import pytest
import numpy as np
from emvsbayes.study import replicate as rep
from emvsbayes.study.spec import cells, load_study_spec
from emvsbayes.seeds import int_seed

spec = load_study_spec(sys.argv[1])
cell = cells(spec)[0]
family = rep.study_family(spec)
model_def = family.study_model(spec, cell, rep.cell_prior(spec, cell))
truth = family.study_truth(spec, cell, model_def, rep.cell_rng(spec["seed"], 0))
seeds = rep.replicate_seeds(spec["seed"], 0, 0)
arrays = family.as_arrays(family.study_data(model_def, truth, cell, np.random.default_rng(seeds["data"])))
entries = lambda: sorted(p.name for p in Path(sys.argv[2]).iterdir() if not p.name.endswith("-atime"))
sampler, built = rep.cell_sampler(family, model_def, arrays, cell, spec)
after_programs = entries()
rep.sample(sampler, family, model_def, arrays, truth, spec, int_seed(seeds["sampler"]))
print(json.dumps({"built": built, "after_programs": after_programs, "after_sampling": entries()}))
"""

TINY = """
kind = "coverage"
seed = 3
replicates = 1
[model]
family = "gaussian"
[grid]
n_obs = [30]
separation = [3.0]
[bayes]
chains = 2
draws = 50
tune = 50
[intervals]
kinds = ["posterior"]
"""


@pytest.mark.slow
def test_the_worker_that_builds_a_cells_programs_also_stores_their_executables(tmp_path):
    # Before: with cold caches every worker compiled the executables of a shape's programs at its first
    # replicate (the builder had stored the programs, not the executables). Now the builder compiles them
    # before releasing the lock, and a replicate's own calls then compile nothing new.
    import json
    import os
    import subprocess
    import sys

    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY, encoding="utf-8")
    jax_cache = tmp_path / "jax"
    jax_cache.mkdir()
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(jax_cache), EMVSBAYES_PROGRAM_CACHE_DIR=str(tmp_path / "programs"),
               PYTENSOR_FLAGS=f"base_compiledir={tmp_path / 'pytensor'}")
    done = subprocess.run([sys.executable, "-c", _BUILDER, str(spec), str(jax_cache)], env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["built"]
    assert found["after_programs"], "no executable stored while the programs were obtained"
    assert found["after_sampling"] == found["after_programs"]
