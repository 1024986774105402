"""``emvsbayes run`` of a spec whose data are a Zarr store (``[data] store``, issue 21 item 4).

The oracle is :func:`emvsbayes.gaussian.fit` on the same rows loaded into memory, from the same start:
the store's run is the chunked EM (the sum of the in-memory E-step over chunks, sums added in another
order), so both are the same iterates up to rounding, far inside the 1e-10 relative asked for (see
tests/test_chunked_em.py). Bad stores are refused with one line, exit status 2, nothing written.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from conftest import run_cli
from emvsbayes.family import get_family
from emvsbayes.gaussian import GaussianMixtureModel, fit, initial_params
from emvsbayes.gaussian.family import start_source
from emvsbayes.results import read_results
from test_bad_inputs import assert_user_error

EM_ONLY = """[em]
n_init = 1
bootstrap = 0
information = false
kmeans = false
[bayes]
enabled = false
"""


def three_blobs() -> np.ndarray:
    """750 points in three overlapping clusters, far from the origin (so the standardising frame matters)."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal([0, 0], 1, (300, 2)), rng.normal([4, 3], 0.7, (200, 2)),
                        rng.normal([-3, 5], 1.5, (250, 2))])
    return x + 1000.0


def write_store(path, x, chunk_rows=128, dtype="f8", **attrs):
    array = zarr.create_array(str(path), shape=x.shape, chunks=(chunk_rows, *x.shape[1:]), dtype=dtype)
    array[...] = x
    array.attrs.update(attrs)
    return path


def store_spec(tmp_path, store="x.zarr", extra="", em=EM_ONLY, components=3):
    spec = tmp_path / "spec.toml"
    spec.write_text(f'seed = 5\n[data]\nstore = "{store}"\n{extra}[model]\nfamily = "gaussian"\n'
                    f"components = {components}\n{em}", encoding="utf-8")
    return spec


@pytest.mark.slow  # a whole run through the CLI on a Dask cluster: 7 s of CPU
def test_store_run_equals_in_memory_fit(tmp_path):
    x = three_blobs()
    write_store(tmp_path / "x.zarr", x, columns=["length", "width"])
    model = GaussianMixtureModel(3, "full")
    start = initial_params(model, x, "kmeans", np.random.default_rng(0))
    given = {"weights": start.w.tolist(), "means": start.mu.tolist(), "covariances": start.covariances().tolist()}
    init_toml = ("init = { weights = %s, means = %s, covariances = %s }\n" % (given["weights"], given["means"],
                                                                               given["covariances"]))
    spec = store_spec(tmp_path, em=EM_ONLY.replace("[em]\n", '[em]\nkinds = ["soft", "hard"]\n' + init_toml))
    out = tmp_path / "out"
    proc = run_cli("run", spec, "--out", out, "--workers", "1", "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    tree = read_results(out / "results.nc")
    # The start as the run makes it from the spec's parameters (it reads no data for given parameters).
    init = start_source(model, x, {"init": given}, np.random.default_rng(0))[0]()
    family = get_family("gaussian")
    for group, kind in (("em", "soft"), ("em_hard", "hard")):
        want = fit(model, x, init, kind=kind, tol=1e-8, param_tol=1e-6, max_iter=500)
        variables = {name: tree[group][name].values for name in ("w", "mu", "cov")}
        got = family.params_from_variables(model, variables)
        assert tree[group].attrs["n_iter"] == want.n_iter, group
        for name in ("w", "mu"):
            np.testing.assert_allclose(getattr(got, name), getattr(want.params, name), rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(got.covariances(), want.params.covariances(), rtol=1e-10,
                                   atol=1e-10 * np.abs(want.params.covariances()).max())
        assert float(tree[group]["loglik"]) == pytest.approx(want.loglik, rel=1e-10)
        np.testing.assert_allclose(tree[f"{group}_trace"]["loglik"].values, want.loglik_path, rtol=1e-10)
    assert list(tree["em"]["feature"].values) == ["length", "width"]
    assert tree["data"].attrs["n_rows"] == 750 and tree["data"].attrs["n_chunks"] == 6
    assert "resp" not in tree["em"] and "posterior" not in tree.children
    assert (out / "index.html").stat().st_size > 0


BAD_STORES = {
    # name: (how the store is written, or None for no store, extra [data] lines, expected message)
    "missing": (None, "", "[data] store '{dir}/x.zarr': no such file or folder; give the path of a Zarr store, "
                          "relative to the spec's folder"),
    "one_dimensional": (lambda p: write_store(p, np.arange(10.0)), "",
                        "[data] store '{dir}/x.zarr': has shape (10,); give a 2-D array, one row per point and one "
                        "column per measurement"),
    "three_dimensional": (lambda p: write_store(p, np.zeros((10, 2, 2))), "",
                          "[data] store '{dir}/x.zarr': has shape (10, 2, 2); give a 2-D array, one row per point "
                          "and one column per measurement"),
    "integers": (lambda p: write_store(p, np.arange(20).reshape(10, 2), dtype="i8"), "",
                 "[data] store '{dir}/x.zarr': holds int64 values; store the measurements as floats (float64 or "
                 "float32)"),
    "empty_folder": (lambda p: p.mkdir(), "",
                    "[data] store '{dir}/x.zarr': not a Zarr store; write the data with zarr or "
                    "dask.array.to_zarr, or give a CSV as file = \"data.csv\""),
    "group_without_array_name": (lambda p: zarr.open_group(str(p), mode="w").create_array("x", shape=(5, 2), dtype="f8"),
                                 "", "[data] store '{dir}/x.zarr': is a Zarr group; name the array to fit with [data] "
                                     "store_array (arrays: 'x')"),
    "fewer_rows_than_components": (lambda p: write_store(p, np.ones((2, 2))), "",
                                   "[data] store '{dir}/x.zarr': has 2 rows, fewer than [model] components = 3; use at "
                                   "most 2 components"),
    "nan": (lambda p: write_store(p, np.where(np.arange(40).reshape(20, 2) == 13, np.nan, 1.0 * np.arange(40).reshape(20, 2)),
                                  chunk_rows=6), "",
            "[data] store '{dir}/x.zarr': 1 of 20 rows hold NaN or an infinity; remove or impute them and write the "
            "store again"),
    "no_rows": (lambda p: write_store(p, np.ones((0, 2))), "",
                "[data] store '{dir}/x.zarr': has no rows; write the data into the store"),
    # the one pass before fitting: a NaN in a later chunk, values whose squares overflow, a damaged chunk
    "infinity_in_a_later_chunk": (lambda p: write_store(p, np.where(np.arange(40).reshape(20, 2) == 37, np.inf, 1.0),
                                                        chunk_rows=6), "",
                                  "[data] store '{dir}/x.zarr': 1 of 20 rows hold NaN or an infinity; remove or impute "
                                  "them and write the store again"),
    "values_beyond_float64_squares": (lambda p: write_store(p, np.arange(40.0).reshape(20, 2) * 1e200, chunk_rows=6), "",
                                      "[data] store '{dir}/x.zarr': column 'x1' holds values as large as 3.8e+201; "
                                      "beyond 1e+150 their squares overflow floating point, so rescale the column (e.g. "
                                      "divide it by 1e201) or write the store without it"),
    "damaged_chunk": (lambda p: _damage(write_store(p, np.arange(40.0).reshape(20, 2), chunk_rows=6)), "",
                      "[data] store '{dir}/x.zarr': rows 6 to 11 cannot be read (RuntimeError: Zstd decompression "
                      "error: invalid input data); the store is damaged, write it again"),
}


def _damage(path):
    """Overwrite the bytes of the store's second chunk (rows 6 to 11)."""
    (path / "c" / "1" / "0").write_bytes(b"garbage!")
    return path


@pytest.mark.parametrize("case", sorted(BAD_STORES))
def test_bad_store(case, tmp_path):
    make, extra, expected = BAD_STORES[case]
    if make is not None:
        make(tmp_path / "x.zarr")
    spec, out = store_spec(tmp_path, extra=extra), tmp_path / "out"
    proc = run_cli("run", spec, "--out", out, "--workers", "1", timeout=300)
    assert_user_error(proc, expected.format(dir=tmp_path), out)


BAD_STORE_SPECS = {
    "posterior_on": (EM_ONLY.replace("enabled = false", "enabled = true"),
                     "[data] store: data larger than memory are fitted by EM alone (the posterior, the bootstrap, the "
                     "observed information, k-means, the ladder and model choice need every row in memory); set "
                     "[bayes] enabled = false"),
    "defaults": ("", "[data] store: data larger than memory are fitted by EM alone (the posterior, the bootstrap, the "
                     "observed information, k-means, the ladder and model choice need every row in memory); set "
                     "[bayes] enabled = false, [em] bootstrap = 0, [em] information = false, [em] kmeans = false"),
    "csv_option": ('[data]\nstore = "x.zarr"\ncolumns = ["a"]\n[model]\nfamily = "gaussian"\n' + EM_ONLY,
                   "[data] columns describes a CSV file's columns and means nothing for a store; remove it (a store's "
                   "columns are all fitted)"),
    "store_and_file": ('[data]\nstore = "x.zarr"\nfile = "x.csv"\n[model]\nfamily = "gaussian"\n' + EM_ONLY,
                       "[data] gives both store and file; keep one of them"),
    "coins": ('[data]\nstore = "x.zarr"\n[model]\nfamily = "coins"\n',
              "[data] store: the coins family has no chunked EM, so it cannot be fitted from a store; give the "
              "data as file = \"data.csv\""),
}


@pytest.mark.parametrize("case", sorted(BAD_STORE_SPECS))
def test_bad_store_spec(case, tmp_path):
    """Refused when the spec is read, before the store is opened (none exists here)."""
    text, expected = BAD_STORE_SPECS[case]
    spec, out = tmp_path / "spec.toml", tmp_path / "out"
    spec.write_text(text if text.startswith("[data]") else f'[data]\nstore = "x.zarr"\n[model]\nfamily = "gaussian"\n{text}',
                    encoding="utf-8")
    assert_user_error(run_cli("run", spec, "--out", out), f"{spec}: {expected}", out)


def test_scheduler_only_for_a_store(tmp_path):
    spec, out = tmp_path / "spec.toml", tmp_path / "out"
    spec.write_text('[data]\ndataset = "acidity"\n[model]\nfamily = "gaussian"\n', encoding="utf-8")
    assert_user_error(run_cli("run", spec, "--out", out, "--workers", "2"),
                      "--scheduler and --workers are for a spec whose data are a store ([data] store = \"x.zarr\", "
                      "fitted by chunked EM on Dask); leave them out", out)
