"""EM on a dask array (emvsbayes.gaussian.chunked) against the in-memory fit, on a real in-process Dask cluster.

The oracle is :func:`emvsbayes.gaussian.fit` on the same rows in memory: the chunked E-step is the sum of
the in-memory E-step over chunks, so the two fits are the same sequence of iterates up to rounding (sums
added in another order, a frame computed from chunk sums), 1e-16 relative per operation. Over a few tens of
iterations of a contracting map that stays far below the 1e-10 asked for: measured here, 1e-13 at most.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from emvsbayes.errors import DegenerateFitError
from emvsbayes.gaussian import COVARIANCE_TYPES, GaussianMixtureModel, GaussianParams, fit, initial_params
from emvsbayes.gaussian import chunked

# Uneven on purpose: a one-row chunk, an empty one, and chunks of every size (750 rows in all).
UNEVEN_ROWS = (100, 7, 0, 293, 1, 349)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as active:
        yield active


def three_blobs(offset: float = 1000.0) -> np.ndarray:
    """750 points in three overlapping clusters, far from the origin (so the frame matters)."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal([0, 0], 1, (300, 2)), rng.normal([4, 3], 0.7, (200, 2)),
                        rng.normal([-3, 5], 1.5, (250, 2))])
    return x + offset


def assert_same_params(got: GaussianParams, want: GaussianParams, rtol: float = 1e-10) -> None:
    """Equal to ``rtol`` relative to each array's largest entry (an off-diagonal precision factor near 0 has
    no relative accuracy of its own)."""
    for name in ("w", "mu", "prec_chol"):
        a, b = getattr(want, name), getattr(got, name)
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.abs(a).max(), err_msg=name)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_equals_in_memory_fit(client, covariance_type):
    x = three_blobs()
    model = GaussianMixtureModel(3, covariance_type)
    init = initial_params(model, x, "kmeans", np.random.default_rng(0))
    want = fit(model, x, init)
    got = chunked.fit(model, da.from_array(x, chunks=(UNEVEN_ROWS, (2,))), init, client=client)
    assert got.converged and want.converged
    assert got.n_iter == want.n_iter
    assert_same_params(got.params, want.params)
    assert got.loglik == pytest.approx(want.loglik, rel=1e-10)
    np.testing.assert_allclose(got.loglik_path, want.loglik_path, rtol=1e-10)
    # The log-likelihood never falls (fit_em raises if it does; checked here on the trace too).
    assert np.all(np.diff(got.loglik_path) >= -1e-10 * np.abs(got.loglik_path[1:]))
    np.testing.assert_allclose(got.stats.nk, want.stats.nk, rtol=1e-10)
    np.testing.assert_allclose(got.stats.sum_x, want.stats.sum_x, rtol=1e-10)


def test_hard_em_and_one_feature_equal_in_memory(client):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-2, 1, 400), rng.normal(3, 0.5, 200)])
    model = GaussianMixtureModel(2, "full")
    init = initial_params(model, x, "kmeans", np.random.default_rng(2))
    for kind in ("soft", "hard"):
        want = fit(model, x, init, kind=kind)
        got = chunked.fit(model, da.from_array(x, chunks=(250, 100, 250)), init, kind=kind, client=client)
        assert got.n_iter == want.n_iter
        assert_same_params(got.params, want.params)
        assert got.loglik == pytest.approx(want.loglik, rel=1e-10)


# What the E-step tasks saw: (rows given, numbers returned). Module level, so the tasks (pickled by reference,
# run by in-process workers) append to this very list.
SEEN_BY_TASKS: list[tuple[int, int]] = []
_ORIGINAL_CHUNK_STATISTICS = chunked.chunk_statistics


def recording_chunk_statistics(model, frame, params, kind, block):
    out = _ORIGINAL_CHUNK_STATISTICS(model, frame, params, kind, block)
    SEEN_BY_TASKS.append((block.shape[0], out.n_numbers))  # list.append is atomic: tasks may run in threads
    return out


def test_each_task_holds_one_chunk_and_returns_a_few_numbers(client, monkeypatch):
    """Memory per task is bounded by the chunk: every E-step task is given one chunk (never more rows than
    the largest chunk), and what it sends back is K (1 + D + D^2) + 2 numbers, whatever its length."""
    x = three_blobs()
    model = GaussianMixtureModel(3, "full")
    init = initial_params(model, x, "kmeans", np.random.default_rng(0))
    SEEN_BY_TASKS.clear()
    # In-process workers run the same module objects, so the patched function is the one the tasks call.
    monkeypatch.setattr(chunked, "chunk_statistics", recording_chunk_statistics)
    got = chunked.fit(model, da.from_array(x, chunks=(UNEVEN_ROWS, (2,))), init, client=client, max_iter=3,
                      tol=0.0, param_tol=0.0)
    assert got.n_iter == 3
    non_empty = sorted(n for n in UNEVEN_ROWS if n > 0)
    # One task per non-empty chunk per E-step (4 E-steps: the start and 3 iterations), each on exactly its chunk.
    seen_rows = [rows for rows, _ in SEEN_BY_TASKS]
    assert sorted(seen_rows) == sorted(non_empty * 4)
    assert max(seen_rows) == max(UNEVEN_ROWS) < x.shape[0]
    k, d = 3, 2
    assert {numbers for _, numbers in SEEN_BY_TASKS} == {2 + k * (1 + d + d * d)}


def test_reduction_adds_statistics_of_parts():
    """add_statistics of the chunks' statistics is the statistics of their rows together (the oracle: the
    in-memory E-step of the joined rows, in the same frame)."""
    x = three_blobs()
    model = GaussianMixtureModel(3, "diag")
    params = initial_params(model, x, "kmeans", np.random.default_rng(0))
    frame = chunked.frame_of(model, x.mean(axis=0), x.var(axis=0))
    parts = [chunked.chunk_statistics(model, frame, params, "soft", block) for block in np.split(x, [10, 11, 400])]
    whole = chunked.chunk_statistics(model, frame, params, "soft", x)
    total = chunked.add_statistics(*parts)
    assert total.n_rows == whole.n_rows == 750
    for name in ("nk", "sum_z", "sum_zz"):
        np.testing.assert_allclose(getattr(total, name), getattr(whole, name), rtol=1e-12)
    assert total.loglik == pytest.approx(whole.loglik, rel=1e-13)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_standardised_chunk_is_prepare_to_the_bit(covariance_type):
    """The chunk's standardised data are prepare's with the same frame, bit for bit (and its block size)."""
    from emvsbayes.gaussian import prepare

    model = GaussianMixtureModel(3, covariance_type)
    for rows in (1, 300, 40_000, 70_000):
        x = np.random.default_rng(rows).normal(50.0, 3.0, (rows, 2))
        frame = chunked.frame_of(model, x.mean(axis=0) + 1.0, x.var(axis=0) * 2.0)
        got, want = chunked.standardised(model, frame, x), prepare(model, x, frame=frame)
        assert np.array_equal(got.z_t, want.z_t)
        assert got.chunk_size == want.chunk_size
        if covariance_type == "tied":
            assert np.array_equal(got.zz_total, want.zz_total)


def test_frame_matches_in_memory_prepare(client):
    from emvsbayes.gaussian import prepare

    x = three_blobs()
    for covariance_type in COVARIANCE_TYPES:
        model = GaussianMixtureModel(3, covariance_type)
        frame = chunked.data_frame(model, da.from_array(x, chunks=(UNEVEN_ROWS, (2,))), client)
        want = prepare(model, x).frame
        np.testing.assert_allclose(frame.centre, want.centre, rtol=1e-14)
        np.testing.assert_allclose(frame.scale, want.scale, rtol=1e-12)


def test_degenerate_fit_raises_as_in_memory(client):
    """A component collapsing onto one point fails the same way as in memory, naming the iteration."""
    x = np.concatenate([np.zeros(5), np.linspace(10, 20, 50)])
    model = GaussianMixtureModel(2, "full", reg_covar=0.0)
    init = GaussianParams(np.array([0.5, 0.5]), np.array([[0.0], [15.0]]), np.array([[[1.0]], [[0.3]]]), "full")
    with pytest.raises(DegenerateFitError) as want:
        fit(model, x, init)
    with pytest.raises(DegenerateFitError) as got:
        chunked.fit(model, da.from_array(x, chunks=20), init, client=client)
    assert str(got.value) == str(want.value)


def test_responsibilities_as_a_dask_array(client):
    from emvsbayes.gaussian.em import log_resp

    x = three_blobs()
    model = GaussianMixtureModel(3, "tied")
    init = initial_params(model, x, "kmeans", np.random.default_rng(0))
    got = chunked.fit(model, da.from_array(x, chunks=(UNEVEN_ROWS, (2,))), init, client=client)
    with pytest.raises(ValueError, match="chunked.log_resp"):
        got.stats.log_resp
    lazy = chunked.log_resp(model, got.params, da.from_array(x, chunks=(UNEVEN_ROWS, (2,))))
    assert lazy.chunks[0] == UNEVEN_ROWS
    np.testing.assert_allclose(client.compute(lazy).result(), log_resp(model, got.params, x), rtol=1e-12,
                               atol=1e-12)


def test_refuses_what_is_not_a_dask_array():
    model = GaussianMixtureModel(2, "full")
    x = np.arange(10.0)
    init = initial_params(model, x, "kmeans", np.random.default_rng(0))
    with pytest.raises(TypeError, match="emvsbayes.gaussian.fit"):
        chunked.fit(model, x, init)
