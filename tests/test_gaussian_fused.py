"""The fused soft E-step of full covariances (:mod:`emvsbayes.gaussian.fused`, numba) against numpy.

Oracles: ``np.exp`` for the kernel's own exponential (both within an ulp or so of the true value, so 3
ulp apart at most: 6.7e-16 relative); the numpy route of the E-step (:func:`estep_fast.weighted_sums` with
the fused route switched off) and the plain definition (per-component log-densities, ``logsumexp``,
weighted sums taken directly) for the statistics, to 1e-12 relative (the routes differ only in the order
of floating-point operations). Blocks are fixed by N, so the serial and the parallel kernels, and calls
from several threads at once, give the same numbers to the last bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp

from emvsbayes.gaussian import em as gem
from emvsbayes.gaussian import estep_fast as fast
from emvsbayes.gaussian import fused, fused_unrolled
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams

EPS = np.finfo(float).eps


@pytest.fixture(autouse=True)
def fused_route_everywhere(monkeypatch):
    """The fused route whatever this machine's numpy and at every D (its rule, fused_pays, picks it only
    where it pays; the tests hold it to the numpy route everywhere)."""
    monkeypatch.setattr(fast, "numpy_exp_is_avx512", lambda: False)
    monkeypatch.setattr(fast, "FUSED_MAX_FEATURES", 1000)


@pytest.fixture(params=["generic", "unrolled"])
def kernel(request, monkeypatch):
    """Each of the fused kernels at any N: the generic one, and the one generated for the (D, K)."""
    monkeypatch.setattr(fused, "UNROLLED", request.param == "unrolled")
    monkeypatch.setattr(fused_unrolled, "MIN_ROWS", 0)
    return request.param


def test_exp_matches_numpy_on_millions_of_points():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        -rng.uniform(0.0, 700.0, 2_000_000),  # the whole range used
        -rng.uniform(0.0, 1.0, 1_000_000),  # where most responsibilities are
        -np.exp(rng.uniform(-745.0, 0.0, 500_000)),  # tiny arguments: e^x ~ 1 - |x|
        -np.arange(0, 1011) * np.log(2.0),  # on the boundaries of the range reduction
        -(np.arange(0, 1011) + 0.5) * np.log(2.0),
        [0.0, -0.0, -5e-324, -1e-300, -700.0],
    ])
    x = x[x >= fused.EXP_FLOOR]  # below it the kernel's answer is 0 by design (next test)
    out = np.empty_like(x)
    fused.exp_nonpositive(x, out)
    want = np.exp(x)
    relative = np.abs(out - want) / want
    assert relative.max() <= 3 * EPS, (relative.max() / EPS, x[np.argmax(relative)])
    # Not a single value off by more than that, and most exact or one ulp apart.
    assert np.mean(relative <= EPS) > 0.95
    assert out[-5] == 1.0 and out[-4] == 1.0


def test_bounded_exp_matches_numpy_up_to_its_ceiling():
    # exp_bounded: exp_le0's arithmetic for scores relative to component 0, which may be positive.
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-700.0, fused.EXP_CEILING, 2_000_000), rng.uniform(-1.0, 1.0, 500_000),
                        np.arange(-1010, 505) * np.log(2.0), [0.0, fused.EXP_CEILING, fused.EXP_FLOOR]])
    x = x[(x >= fused.EXP_FLOOR) & (x <= fused.EXP_CEILING)]  # beyond, clipped (below)
    out = np.empty_like(x)
    fused.exp_bounded_each(x, out)
    relative = np.abs(out - np.exp(x)) / np.exp(x)
    assert relative.max() <= 3 * EPS, (relative.max() / EPS, x[np.argmax(relative)])
    assert np.mean(relative <= EPS) > 0.95
    clipped = np.array([fused.EXP_CEILING + 1.0, 1e300, np.nextafter(fused.EXP_FLOOR, -np.inf), -1e300])
    out = np.empty_like(clipped)
    fused.exp_bounded_each(clipped, out)
    assert out[0] == out[1] == pytest.approx(np.exp(fused.EXP_CEILING), rel=3 * EPS)
    assert np.all(out[2:] == 0.0)


def test_mantissa_and_binary_exponent_are_exact():
    rng = np.random.default_rng(2)
    x = np.concatenate([np.exp(rng.uniform(0.0, 700.0, 100_000)), [1.0, 2.0, np.nextafter(2.0, 0.0), 3.0, 2.0**504]])
    mantissas, exponents = np.empty_like(x), np.empty_like(x)
    fused.split_each(x, mantissas, exponents)
    want_mantissas, want_exponents = np.frexp(x)
    np.testing.assert_array_equal(mantissas, 2 * want_mantissas)
    np.testing.assert_array_equal(exponents, want_exponents - 1)


def test_exp_flushes_below_the_floor_to_exact_zeros():
    x = np.array([-700.0, np.nextafter(-700.0, -np.inf), -701.0, -745.0, -800.0, -1e300, -np.inf])
    out = np.empty_like(x)
    fused.exp_nonpositive(x, out)
    assert out[0] == pytest.approx(np.exp(-700.0), rel=3 * EPS)
    assert np.all(out[1:] == 0.0)


def problem(n: int, d: int, k: int, seed: int):
    """Data from k clusters away from the origin and parameters near them (not fitted ones)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, size=(k, d)) + 50.0
    x = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d)
    prec = []
    for _ in range(k):
        a = rng.normal(size=(d, d))
        prec.append(a @ a.T / d + 0.5 * np.eye(d))
    params = GaussianParams.from_precisions(rng.dirichlet(np.full(k, 3.0)), centres + rng.normal(0, 0.5, (k, d)),
                                            np.stack(prec), "full")
    return GaussianMixtureModel(k, "full"), x, params


def numpy_route(model, data, params, keep_log_resp, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(fast, "FUSED_FORMS", frozenset())
        return fast.weighted_sums(fast.soft_assign, model, data, params, keep_log_resp)


# (The generated kernel at D = 10, K = 8 takes about a minute to compile: the generic kernel's case only.)
@pytest.mark.parametrize(("n", "d", "k", "kernel"), [
    (1, 1, 1, "generic"), (700, 1, 2, "generic"), (2049, 2, 3, "generic"), (1537, 10, 8, "generic"),
    (5000, 3, 5, "generic"), (1, 1, 1, "unrolled"), (3, 2, 3, "unrolled"), (700, 1, 2, "unrolled"),
    (2049, 2, 3, "unrolled"), (1025, 2, 1, "unrolled"), (5000, 3, 5, "unrolled")], indirect=["kernel"])
@pytest.mark.parametrize("narrow", [False, True])
def test_fused_sums_equal_the_numpy_route_and_the_definition(n, d, k, kernel, narrow, monkeypatch):
    # Several blocks and a ragged last one (BLOCK_ROWS = 512), one row, three rows, one feature, one
    # component, several tiles of the generated kernel's sums (K = 5, D = 3). ``narrow``: component 0's
    # precision scaled to trace 30 D (standard deviations about 0.2 among clusters 3 apart; trace(P_z) still
    # below TIGHT_TRACE: not the centred route).
    model, x, params = problem(n, d, k, seed=n + d + k)
    if narrow:
        chol = np.array(params.prec_chol)
        chol[0] *= np.sqrt(30 * d / np.trace(chol[0] @ chol[0].T))
        params = GaussianParams(params.w, params.mu, chol, "full")
    data = gem.prepare(model, x)
    calls = []
    monkeypatch.setattr(fused, "soft_full_sums", lambda *a, _f=fused.soft_full_sums: calls.append(1) or _f(*a))
    sums, shift, log_resp_t, objective = fast.weighted_sums(fast.soft_assign, model, data, params, True)
    assert calls, "the full structure's soft E-step did not take the fused kernel"
    want_sums, want_shift, want_log_resp_t, want_objective = numpy_route(model, data, params, True, monkeypatch)
    np.testing.assert_allclose(sums, want_sums, rtol=1e-12, atol=1e-12 * np.abs(want_sums).max())
    np.testing.assert_array_equal(shift, want_shift)
    np.testing.assert_allclose(log_resp_t, want_log_resp_t, rtol=1e-12, atol=1e-12)
    assert objective == pytest.approx(want_objective, rel=1e-12)
    # The definition itself: log-joints per component in original units, logsumexp, weighted sums.
    plain = model.log_joint(params, x)
    log_norm = logsumexp(plain, axis=1)
    assert objective - n * data.frame.log_jacobian == pytest.approx(log_norm.sum(), rel=1e-12)
    resp = np.exp(plain - log_norm[:, None])
    stats = gem._stats(model, data, log_resp_t, sums.T, shift)
    np.testing.assert_allclose(stats.nk, resp.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.sum_x, resp.T @ x, rtol=1e-12)
    z = (x - data.frame.centre) / data.frame.scale
    np.testing.assert_allclose(stats.sum_zz, np.einsum("nk,nd,ne->kde", resp, z, z), rtol=1e-11,
                               atol=1e-12 * n)


def test_fused_sums_with_terms_below_e_minus_700(kernel, monkeypatch):
    # A far outlier: its responsibilities for the distant components fall below e^-700 of the largest and
    # are exact zeros in both routes; its log responsibilities keep their values. Placed where component 0
    # is not the best (its score more than 350 below another's: the generated kernel's first block then
    # takes its shifted route).
    model, x, params = problem(1200, 2, 3, seed=3)
    for angle in np.linspace(0.0, 2 * np.pi, 16, endpoint=False):
        x[7] = 1e4 * np.array([np.cos(angle), np.sin(angle)])
        log_joint = model.log_joint(params, x[7:8])[0]
        if log_joint.max() - log_joint[0] > 700:
            break
    assert log_joint.max() - log_joint[0] > 700 and np.sort(log_joint)[-2] < log_joint.max() - 700
    data = gem.prepare(model, x)
    sums, _, log_resp_t, objective = fast.weighted_sums(fast.soft_assign, model, data, params, True)
    want_sums, _, want_log_resp_t, want_objective = numpy_route(model, data, params, True, monkeypatch)
    assert np.min(log_resp_t[:, 7]) < -700
    if kernel == "unrolled":
        # the outlier's block leaves the range of scores relative to component 0 and takes the shifted route
        kernels = fused_unrolled.kernels(2, 3, fused.BLOCK_ROWS)
        extra = fast.scoring_for(model, data, params).extra
        work = np.empty(kernels.SCRATCH)
        flagged = []
        for block in (0, 1):
            parts = range(block * fused.BLOCK_ROWS, (block + 1) * fused.BLOCK_ROWS, kernels.PART_ROWS)
            count = 0.0
            for start in parts:
                kernels.scores_relative(data.z_t, start, kernels.PART_ROWS, extra.mu_z,
                                        np.ascontiguousarray(extra.u_z), extra.base, work, False)
                count += kernels.count_at_least(work, kernels.EXPONENTS_AT, kernels.EXPONENTS_AT + kernels.PART_ROWS,
                                                kernels.TOO_LARGE)
            flagged.append(count > 0)
        assert flagged == [True, False]
    np.testing.assert_allclose(sums, want_sums, rtol=1e-12, atol=1e-12 * np.abs(want_sums).max())
    # (absolute near 0: a log responsibility of -3e-12 is there a difference of scores tens apart, with
    # their rounding, 1e-14)
    np.testing.assert_allclose(log_resp_t, want_log_resp_t, rtol=1e-12, atol=1e-12)
    assert objective == pytest.approx(want_objective, rel=1e-12)


@pytest.mark.parametrize(("n", "d", "k"), [(3000, 2, 3), (1500, 3, 1)])
def test_generated_kernel_takes_a_tight_components_moments_about_its_mean(n, d, k, monkeypatch):
    # Component 0 a cluster of 300 points 0.003 wide (trace(P_z) far above TIGHT_TRACE): the numpy route
    # and the generated kernel take its moments about its mean (the generic kernel cannot: with fewer rows
    # than MIN_ROWS the numpy route runs).
    monkeypatch.setattr(fused_unrolled, "MIN_ROWS", 0)
    model, x, params = problem(n, d, k, seed=21)
    rng = np.random.default_rng(22)
    x[:300] = params.mu[0] + 0.003 * rng.normal(size=(300, d))
    chol = np.array(params.prec_chol)
    chol[0] = np.eye(d) / 0.003
    params = GaussianParams(params.w, params.mu, chol, "full")
    data = gem.prepare(model, x)
    tight, _ = fast.shifted(model, fast.scoring_for(model, data, params).extra)
    assert list(tight) == [0]
    calls = []
    monkeypatch.setattr(fused, "soft_full_sums", lambda *a, _f=fused.soft_full_sums: calls.append(1) or _f(*a))
    sums, shift, log_resp_t, objective = fast.weighted_sums(fast.soft_assign, model, data, params, True)
    assert calls
    monkeypatch.setattr(fused_unrolled, "MIN_ROWS", n + 1)
    fast.weighted_sums(fast.soft_assign, model, data, params, False)
    assert len(calls) == 1
    want_sums, want_shift, want_log_resp_t, want_objective = numpy_route(model, data, params, True, monkeypatch)
    np.testing.assert_array_equal(shift, want_shift)
    np.testing.assert_allclose(sums, want_sums, rtol=1e-12, atol=1e-12 * np.abs(want_sums).max())
    np.testing.assert_allclose(log_resp_t, want_log_resp_t, rtol=1e-12, atol=1e-12)
    assert objective == pytest.approx(want_objective, rel=1e-12)
    # The moments about the mean are those of the definition, to a precision sums about 0 would not have.
    resp = np.exp(want_log_resp_t[0])
    centred = data.z_t - shift[0][:, None]
    np.testing.assert_allclose(sums[1:1 + d, 0], centred @ resp, rtol=1e-10, atol=1e-12 * resp.sum())


def kernel_inputs(n=20_000, d=3, k=4, seed=5):
    model, x, params = problem(n, d, k, seed)
    data = gem.prepare(model, x)
    extra = fast.scoring_for(model, data, params).extra
    return data.z_t, extra.mu_z, np.ascontiguousarray(extra.u_z), extra.base


def test_serial_parallel_and_concurrent_calls_agree_to_the_bit(kernel):
    z_t, mu_z, u_t, base = kernel_inputs()
    n_blocks = -(-z_t.shape[1] // fused.BLOCK_ROWS)
    k, d = mu_z.shape
    parallel, serial = fused.kernels_for(d, k, z_t.shape[1])
    assert (parallel is fused._all_blocks_parallel) == (kernel == "generic")
    results = []
    for run, stripes in ((serial, 1), (parallel, 2), (parallel, 7)):
        block_sums = np.empty((n_blocks, k, 1 + d + d * (d + 1) // 2))
        objectives = np.empty(n_blocks)
        run(z_t, mu_z, u_t, base, fused.BLOCK_ROWS, fused.group_rows_for(k), stripes, np.empty((k, 0)), False,
            block_sums, objectives)
        results.append((block_sums, objectives))
    for block_sums, objectives in results[1:]:
        np.testing.assert_array_equal(block_sums, results[0][0])
        np.testing.assert_array_equal(objectives, results[0][1])
    # From four threads at once: one takes the parallel kernel, the others the serial one; all agree.
    want = fused.soft_full_sums(z_t, mu_z, u_t, base, False)
    got = [None] * 4

    def call(i):
        got[i] = fused.soft_full_sums(z_t, mu_z, u_t, base, False)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sums, log_resp_t, objective in got:
        np.testing.assert_array_equal(sums, want[0])
        assert log_resp_t is None and objective == want[2]


def test_the_rule_takes_the_fused_route_only_where_it_pays(monkeypatch):
    model, x, _ = problem(100, 2, 3, seed=1)
    data = gem.prepare(model, x)
    assert fast.fused_pays(model, data)
    monkeypatch.setattr(fast, "numpy_exp_is_avx512", lambda: True)
    assert not fast.fused_pays(model, data)
    # With numpy's AVX-512 exp, the generated kernel pays from MIN_ROWS rows on.
    monkeypatch.setattr(fused_unrolled, "MIN_ROWS", 100)
    assert fast.fused_pays(model, data)
    assert fused.kernels_for(2, 3, 100)[0] is not fused._all_blocks_parallel
    assert fused.kernels_for(2, 3, 99)[0] is fused._all_blocks_parallel
    assert fused.kernels_for(2, fused_unrolled.MAX_COMPONENTS + 1, 100)[0] is fused._all_blocks_parallel
    monkeypatch.setattr(fused_unrolled, "MIN_ROWS", 101)
    assert not fast.fused_pays(model, data)
    monkeypatch.setattr(fast, "numpy_exp_is_avx512", lambda: False)
    monkeypatch.setattr(fast, "FUSED_MAX_FEATURES", 1)
    assert not fast.fused_pays(model, data)
    monkeypatch.setattr(fast, "FUSED_MAX_FEATURES", 2)
    assert not fast.fused_pays(GaussianMixtureModel(3, "diag"), data)


def test_fit_with_the_fused_e_step_equals_the_numpy_route(kernel, monkeypatch):
    # A whole fit, both routes: the same iterations and answer to 1e-10 (rounding, compounded over iterations).
    model, x, params = problem(3000, 2, 3, seed=11)
    calls = []
    monkeypatch.setattr(fused, "soft_full_sums", lambda *a, _f=fused.soft_full_sums: calls.append(1) or _f(*a))
    got = gem.fit(model, x, params, tol=1e-10, max_iter=200)
    assert len(calls) == got.n_iter + 1
    monkeypatch.setattr(fast, "FUSED_FORMS", frozenset())
    want = gem.fit(model, x, params, tol=1e-10, max_iter=200)
    assert got.n_iter == want.n_iter
    assert got.loglik == pytest.approx(want.loglik, rel=1e-12)
    for name in ("w", "mu", "prec_chol"):
        a, b = getattr(want.params, name), getattr(got.params, name)
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10 * np.abs(a).max(), err_msg=name)


def test_generated_tiles_cover_every_sum_once():
    for k in range(1, fused_unrolled.MAX_COMPONENTS + 1):
        for d in (1, 2, 3, 10):
            n_design = len(fused_unrolled.design_entries(d))
            assert n_design == 1 + d + d * (d + 1) // 2
            cells = [(j, f) for group, features in fused_unrolled.tiles(k, n_design) for j in group for f in features]
            assert sorted(cells) == [(j, f) for j in range(k) for f in range(n_design)]
            assert all(len(group) * len(features) <= max(k, fused_unrolled.TILE_ACCUMULATORS)
                       for group, features in fused_unrolled.tiles(k, n_design))


def test_kernel_folder_falls_back_to_a_temporary_one(tmp_path, monkeypatch):
    monkeypatch.setenv("EMVSBAYES_KERNEL_CACHE_DIR", str(tmp_path / "here"))
    assert fused_unrolled.kernel_dir() == tmp_path / "here"
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("EMVSBAYES_KERNEL_CACHE_DIR", str(blocker / "below"))
    fallback = fused_unrolled.kernel_dir()
    assert fallback.is_dir() and fallback != blocker / "below"
    assert fused_unrolled.kernel_dir() == fallback  # one per process
    # and it is removed when the process ends (a temporary folder per process was left behind before)
    proc = subprocess.run([sys.executable, "-c", "from emvsbayes.gaussian import fused_unrolled; "
                           "print(fused_unrolled.kernel_dir())"], capture_output=True, text=True, check=True,
                          env={**os.environ, "EMVSBAYES_KERNEL_CACHE_DIR": str(blocker / "below")})
    made = Path(proc.stdout.strip())
    assert made.name.startswith("emvsbayes-kernels-") and not made.exists()


def test_a_change_of_fused_py_names_a_new_kernel_file():
    # numba's cache does not see a change in the fused.py functions a generated kernel inlines; the kernel's
    # source (whose hash names its file) carries fused.py's digest, so a changed fused.py compiles anew
    import hashlib

    digest = hashlib.sha256(Path(fused.__file__).read_bytes()).hexdigest()[:16]
    assert fused_unrolled.FUSED_DIGEST == digest
    assert f"fused.py sha256 {digest}" in fused_unrolled.source(2, 3, 256)
