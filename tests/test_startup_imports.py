"""What the command line imports: a command imports only the libraries its work needs (issue 21, item 2).

Each case runs in a fresh interpreter (the test process itself has imported everything) and reports
which of the heavy libraries ended up in ``sys.modules``. Listing data sets, asking for help, and every
bad input found before fitting import none of them (not even with ``--quiet``, which used to import PyMC
only to quieten its logger); writing and reading a results file imports xarray but not Dask, which
xarray would otherwise import on its own (emvsbayes.lazy_dask), while Dask arrays in xarray still work;
the runner imports no plotting library (arviz-plots, matplotlib: the report's, imported to draw).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from conftest import ROOT

#: Libraries no command needs before fitting (xarray and SciPy included: a bad input exits before them).
HEAVY = ("jax", "numpyro", "pymc", "pytensor", "arviz", "arviz_base", "arviz_stats", "arviz_plots", "matplotlib",
         "dask", "distributed", "xarray", "pandas", "scipy", "scipy.stats", "nutpie", "numba", "h5netcdf")

CLI = """
import json, sys
from emvsbayes.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as stop:  # --help
    status = stop.code
print(json.dumps({"status": status, "imported": [name for name in HEAVY if name in sys.modules]}))
"""


def _in_fresh_interpreter(code: str, *args) -> dict:
    proc = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{code}", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


COINS = '[data]\ndataset = "coins_lecture"\n[model]\nfamily = "coins"\n'
#: case -> (spec text or None, command-line arguments after the spec, exit status)
CASES = {
    "datasets": (None, ["datasets"], 0),
    "help": (None, ["--help"], 0),
    "bad_spec": (COINS + "componets = 2\n", [], 2),
    "bad_spec_quiet": (COINS + "componets = 2\n", ["--quiet"], 2),
    "unknown_dataset_quiet": (COINS.replace("coins_lecture", "no_such_data"), ["--quiet"], 2),
    "bad_seed_quiet": (COINS, ["--seed", "-1", "--quiet"], 2),
    "bad_csv_quiet": ('[data]\nfile = "data.csv"\n[model]\nfamily = "coins"\n', ["--quiet"], 2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_commands_that_do_not_fit_import_no_heavy_library(case, tmp_path):
    text, args, status = CASES[case]
    out = tmp_path / "out"
    if text is not None:
        (tmp_path / "spec.toml").write_text(text)
        (tmp_path / "data.csv").write_text("heads,tosses\n5,10\n12,10\n")  # heads above tosses
        args = ["run", tmp_path / "spec.toml", "--out", out, *args]
    report = _in_fresh_interpreter(CLI, *args)
    assert report["status"] == status
    assert report["imported"] == [], report
    assert not out.exists()


def test_quiet_still_quietens_pymc_imported_later():
    # --quiet no longer imports PyMC up front; PyMC resets its logger's level when it is imported later.
    code = """
import logging, sys
from emvsbayes import cli
cli._quiet_libraries(True)
before = "pymc" in sys.modules
import pymc
print(json.dumps({"status": before, "imported": [logging.getLogger("pymc").getEffectiveLevel()]}))
"""
    report = _in_fresh_interpreter("import json\n" + code)
    assert report == {"status": False, "imported": [logging.ERROR]}


def test_the_runner_imports_no_plotting_library():
    # A run imports the runner before it fits; the plotting libraries (arviz-plots, through the `arviz`
    # umbrella package, and matplotlib's pyplot) are the report's, imported when the page is drawn.
    # The runner used to import them through emvsbayes.labels.groups (`import arviz` for R-hat and ESS,
    # which arviz-stats alone provides), and SciPy's stats through emvsbayes.labels.diagnostics.
    code = """
import sys
import emvsbayes.runner
print(json.dumps({"status": 0, "imported": [name for name in HEAVY if name in sys.modules]}))
"""
    imported = _in_fresh_interpreter("import json\n" + code)["imported"]
    assert not {"arviz", "arviz_plots", "matplotlib", "arviz_stats", "jax", "pymc", "dask"} & set(imported), imported


@pytest.mark.slow  # two fresh interpreters, each importing JAX and running a replicate: ~6 s
def test_a_study_replicate_imports_only_what_it_computes_with():
    """A Dask worker of a study imports what its replicates compute with, and nothing a replicate does not
    use: each import is repeated by every worker before its first replicate. One replicate of the bundled
    coverage study, run as a worker runs it (``run_task``), in a fresh interpreter:

    - no SciPy stats (about 1 s of import per worker under load; it came in through the Wald intervals'
      normal quantile, which scipy.special.ndtri gives alike, and through the SBC module, which a coverage
      study does not need);
    - no xarray, pandas or ArviZ (its R-hat and ESS are computed by emvsbayes.sampling.convergence; the study
      package's own xarray code is the client's);
    - no SciPy optimizers (label assignments of small K are enumerated), no PyMC, no plotting library, no
      numpyro (the sampler runs as exported JAX programs)."""
    code = """
import sys
from emvsbayes.study.spec import cells, load_study_spec
from emvsbayes.study.task import run_task
spec = load_study_spec("models/study_coverage_gmm.toml")
record = run_task(spec, 0, 0, cells(spec)[0])
assert record["status"] == "ok", record["error"]
assert record["scalars"]["rhat_max"] > 0.9 and record["scalars"]["ess_bulk_min"] > 0, record["scalars"]
print(json.dumps({"status": 0, "imported": [name for name in HEAVY + ("scipy.optimize",) if name in sys.modules]}))
"""
    # The first run may build and store the cell's sampler and information programs (cold caches: PyMC,
    # numpyro and ArviZ's converters are imported to export them, once per model shape and machine); a
    # worker that finds them stored, as every worker but the builder does, is the one measured.
    _in_fresh_interpreter("import json\n" + code)
    imported = _in_fresh_interpreter("import json\n" + code)["imported"]
    assert sorted(imported) == ["jax", "scipy"], imported  # numpyro too is left out: the sampler is an exported program


def test_results_file_round_trip_does_not_import_dask(tmp_path):
    code = f"""
import sys
import numpy as np
from emvsbayes.results import build_tree, read_results, write_results
import xarray as xr
groups = {{"data": xr.Dataset({{"heads": ("set", np.arange(3.0))}}), "em": xr.Dataset({{"theta": ("component", np.ones(2))}}),
          "posterior": xr.Dataset({{"theta": (("chain", "draw", "component"), np.arange(12.0).reshape(1, 6, 2))}})}}
write_results(build_tree(groups, {{"title": "t"}}), {str(tmp_path / "results.nc")!r})
tree = read_results({str(tmp_path / "results.nc")!r})
assert float(tree["posterior"]["theta"].sum()) == 66.0
print(json.dumps({{"status": 0, "imported": [name for name in HEAVY if name in sys.modules]}}))
"""
    report = _in_fresh_interpreter("import json\n" + code)
    assert "xarray" in report["imported"] and "h5netcdf" in report["imported"]
    assert "dask" not in report["imported"] and "distributed" not in report["imported"], report


def test_dask_arrays_in_xarray_still_work_after_results_is_imported(tmp_path):
    # emvsbayes.lazy_dask answers "not a Dask array" only while Dask is not imported: once it is, xarray
    # sees Dask arrays as before (chunks, lazy arithmetic, writing them).
    code = f"""
import sys
import emvsbayes.results  # applies emvsbayes.lazy_dask
import numpy as np
import xarray as xr
plain = xr.Dataset({{"a": ("x", np.arange(6.0))}})
assert plain.chunks == {{}}
import dask.array as da
from xarray.namedarray.utils import is_dask_collection
ds = xr.Dataset({{"a": ("x", da.arange(6.0, chunks=2))}})
assert dict(ds.chunks) == {{"x": (2, 2, 2)}} and is_dask_collection(ds["a"].data)
assert isinstance((ds["a"] * 2).data, da.Array)
ds.to_netcdf({str(tmp_path / "d.nc")!r}, engine="h5netcdf")
back = xr.open_dataset({str(tmp_path / "d.nc")!r}, engine="h5netcdf").load()
assert back["a"].values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
print(json.dumps({{"status": 0, "imported": []}}))
"""
    assert _in_fresh_interpreter("import json\n" + code) == {"status": 0, "imported": []}


def test_arviz_does_not_make_figures_or_scipy_import_jax():
    # arviz-base's lazy placeholders for jax/numpyro in sys.modules made matplotlib's and SciPy's "is this a
    # JAX array?" checks import JAX (so `emvsbayes report` imported it); emvsbayes.lazy_imports takes them out.
    code = """
import sys
import emvsbayes.results  # applies emvsbayes.lazy_imports
import arviz_stats
import numpy as np
from scipy.special import logsumexp
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
logsumexp(np.ones((3, 2)), axis=1)
plt.subplots()
before = [name for name in ("jax", "numpyro") if name in sys.modules]
import arviz_base.io_numpyro as io_numpyro
key = io_numpyro.jax.random.PRNGKey(0)  # arviz-base's from_numpyro still gets JAX, imported the usual way
import jax
assert io_numpyro.jax.random is jax.random and type(sys.modules["jax"]).__name__ == "module"
print(json.dumps({"status": 0, "imported": before}))
"""
    assert _in_fresh_interpreter("import json\n" + code) == {"status": 0, "imported": []}


LADDER = """
import sys
import numpy as np
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.data.records import CoinData
from emvsbayes.family import get_family
from emvsbayes.ladder.build import LadderOptions, run_ladder
heads, tosses = np.array([5, 7, 8, 9, 4]), np.full(5, 10)
model_def = CoinMixture(n_components=2, weights="equal", theta_prior=(1.0, 1.0))
data = CoinData(heads, tosses, tuple(f"set {i}" for i in range(5)))
em = CoinParams(np.array([0.8, 0.52]), np.array([0.5, 0.5]))
options = LadderOptions(n_draws=100, vi_methods=("fullrank",), vi_iter=100, n_replicates=10, partition_draws=50)
groups = run_ladder(get_family("coins"), model_def, data, em, seed=3, options=options)
assert list(groups["uncertainty_ladder"]["rung"].values) == ["laplace", "advi_fullrank"]
print(json.dumps({"status": 0, "imported": [name for name in HEAVY if name in sys.modules]}))
"""


@pytest.mark.slow
def test_a_second_ladder_of_the_same_model_needs_no_pymc():
    # The first run may build (and store) the Laplace and ADVI programs with PyMC; a later process with
    # the same model loads them and runs both rungs with JAX alone (issue 21: PyMC's import and
    # compiles were most of a warm lecture run).
    _in_fresh_interpreter("import json\n" + LADDER)
    report = _in_fresh_interpreter("import json\n" + LADDER)
    # (arviz-base's lazy placeholder for numpyro sits in sys.modules whenever arviz-stats is imported.)
    assert not {"pymc", "pytensor", "nutpie", "numba"} & set(report["imported"]), report


def test_numba_is_imported_only_when_a_hidden_markov_model_is_fitted():
    # numba is imported only on the routes that compile a loop: the HMM's Baum-Welch E-step
    # (emvsbayes.hmm.compiled_estep) and, on a CPU without AVX-512, the fused full-covariance E-step
    # (emvsbayes.gaussian.fused). Importing the families (the registry loads them all) and fitting a Poisson
    # mixture must not import numba (about a second); a Baum-Welch fit does.
    code = """
import sys
import numpy as np
from emvsbayes.family import get_family
from emvsbayes.hmm import em
from emvsbayes.hmm.model import HiddenMarkovModel, HMMParams
from emvsbayes.poisson.em import fit as fit_poisson_mixture
from emvsbayes.poisson.model import PoissonMixture, PoissonParams
for name in ("coins", "gaussian", "poisson", "hmm"):
    get_family(name)
y = np.array([3.0, 4, 2, 9, 11, 10, 3, 2, 12, 9])
start = PoissonParams(w=np.array([0.5, 0.5]), rate=np.array([2.0, 10.0]))
fit_poisson_mixture(PoissonMixture(n_components=2), y, start)
before = "numba" in sys.modules
model = HiddenMarkovModel(n_components=2, emission="poisson")
em.fit(model, y, HMMParams([0.5, 0.5], [[0.8, 0.2], [0.2, 0.8]], rate=[3.0, 10.0]), max_iter=5)
print(json.dumps({"status": 0, "imported": [before, "numba" in sys.modules]}))
"""
    assert _in_fresh_interpreter("import json\n" + code) == {"status": 0, "imported": [False, True]}
