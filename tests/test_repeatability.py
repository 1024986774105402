"""Repeatability: the same spec and seed give bit-identical results (EM, bootstrap, posterior draws).

Every bundled comparison spec runs twice in a quick form (conftest.quick_raw: 2 chains of 50 draws after 50
tuning steps, at most 3 EM restarts, 4 bootstrap replicates, no model choice) and every numeric variable of
every group of the two ``results.nc`` files must be equal exactly; only timings (root attributes) may differ.
The first run is the session's shared ``quick_run`` (whose page tests/test_browser_bundled.py loads in
Chromium), so each spec is sampled twice here, not three times. The seed used is always recorded, also when
none was given, and ``--seed`` with it reproduces the run.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import QUICK_SEED, quick_raw, quick_run_group, quick_spec, run_cli
from emvsbayes.pipeline import run_spec
from emvsbayes.results import read_results

BUNDLED = ("lecture_coins", "two_coins", "acidity", "enzyme", "faithful", "galaxies", "heroes")


#: Clock readings, not results: per-draw readings that PyMC's own NUTS stores in sample_stats, and the
#: uncertainty ladder's seconds per rung.
TIMING_VARIABLES = {"perf_counter_start", "perf_counter_diff", "process_time_diff", "seconds"}


def numeric_groups(tree) -> dict[str, dict[str, np.ndarray]]:
    """group path -> variable (and coordinate) name -> values, for every numeric array but timings."""
    out = {}
    for node in tree.subtree:
        arrays = {}
        for name, var in {**node.ds.data_vars, **node.ds.coords}.items():
            if name in TIMING_VARIABLES:
                continue
            if np.issubdtype(var.dtype, np.number) or var.dtype == bool:
                arrays[name] = var.values
        if arrays:
            out[node.path] = arrays
    return out


def assert_identical(first, second) -> None:
    a, b = numeric_groups(first), numeric_groups(second)
    assert sorted(a) == sorted(b)
    for group in a:
        assert sorted(a[group]) == sorted(b[group]), group
        for name in a[group]:
            x, y = a[group][name], b[group][name]
            assert x.dtype == y.dtype and x.shape == y.shape, (group, name)
            # Bit for bit (NaN in the same places counts as equal): no tolerance.
            assert np.array_equal(x, y, equal_nan=np.issubdtype(x.dtype, np.inexact)), f"{group}/{name} differs"
    assert first.attrs["seed"] == second.attrs["seed"] and first.attrs["seeds"] == second.attrs["seeds"]


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(name, marks=quick_run_group(name)) for name in BUNDLED])
def test_same_seed_same_results(name, tmp_path, quick_run):
    """Two runs agree bit for bit. The first is the session's shared quick run (its page is checked in a real
    browser by tests/test_browser_bundled.py); the second repeats it here from a fresh spec, page left out."""
    outcome = quick_run(name)
    first = outcome.tree
    second = run_spec(quick_spec(name), tmp_path / "b", seed=QUICK_SEED, report=False).tree
    assert "posterior" in first.children and "em" in first.children
    assert_identical(first, second)
    assert outcome.report_path.stat().st_size < 5 * 2**20


@pytest.mark.slow
def test_seed_is_recorded_and_reproduces(tmp_path):
    """A run without any seed records the one it drew; --seed with that number repeats the run exactly."""
    raw = quick_raw("lecture_coins")
    raw.pop("seed", None)
    raw.pop("description", None)  # a top-level string; the loop below writes tables
    raw["em"]["bootstrap"] = 0
    lines = [f"title = {raw.pop('title')!r}"]
    for section, table in raw.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
    spec = tmp_path / "unseeded.toml"
    spec.write_text("\n".join(lines) + "\n", encoding="utf-8")

    proc = run_cli("run", spec, "--out", tmp_path / "first", "--quiet")
    assert proc.returncode == 0, proc.stderr
    first = read_results(tmp_path / "first" / "results.nc")
    seed = int(first.attrs["seed"])
    assert 0 <= seed < 2**63
    proc = run_cli("run", spec, "--out", tmp_path / "again", "--quiet", "--seed", seed)
    assert proc.returncode == 0, proc.stderr
    assert_identical(first, read_results(tmp_path / "again" / "results.nc"))


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)
