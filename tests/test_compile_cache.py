"""A second run of a spec compiles nothing (issue: "compile once").

The lecture spec runs twice through the command line with fresh, private cache directories (PyTensor's
``base_compiledir``, numba's and JAX's persistent cache, emvsbayes's exported samplers): the first run
fills them, the second must not add a single file and loads its sampler instead of building it, and
nothing on the default path (numpyro) compiles C at all. Both runs write the same numbers (same seed),
so the stored programs compute what freshly built ones do.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from conftest import ROOT


def _files(directory) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(directory) for f in files}


def _run(out, caches) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTENSOR_FLAGS": f"base_compiledir={caches / 'pytensor'}",
           "NUMBA_CACHE_DIR": str(caches / "numba"),
           "JAX_COMPILATION_CACHE_DIR": str(caches / "jax"),
           "EMVSBAYES_PROGRAM_CACHE_DIR": str(caches / "programs")}
    proc = subprocess.run([sys.executable, "-m", "emvsbayes", "run", str(ROOT / "models" / "lecture_coins.toml"),
                           "--out", str(out), "--quiet"], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_second_run_of_a_spec_compiles_nothing(tmp_path):
    caches = tmp_path / "caches"
    _run(tmp_path / "first", caches)
    after_first = _files(caches)
    assert any("jax" in path for path in after_first), "numpyro's sampler was not cached"
    assert any(path.endswith(".npz") for path in _files(caches / "programs")), "the sampler was not stored"
    # The default path compiles no C: PyTensor's compile directory holds no compiled module.
    assert not [p for p in after_first if p.endswith(".so") and "pytensor" in p]
    _run(tmp_path / "second", caches)
    assert _files(caches) == after_first
    with xr.open_datatree(tmp_path / "first" / "results.nc") as first, \
            xr.open_datatree(tmp_path / "second" / "results.nc") as second:
        np.testing.assert_array_equal(first["posterior"]["theta"].values, second["posterior"]["theta"].values)
        np.testing.assert_array_equal(first["log_likelihood"]["heads"].values, second["log_likelihood"]["heads"].values)
        assert first["posterior"].attrs["compiled_sampler"] == "built"
        assert second["posterior"].attrs["compiled_sampler"] == "loaded"
