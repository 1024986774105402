"""The compiled Baum-Welch E-step (emvsbayes/hmm/compiled_estep.py) against its oracles: brute-force enumeration
of every state path on small random problems (K = 1 included, T = 1 included, emissions spread over 1000 nats),
and the numpy recursions of emvsbayes.hmm.inference on series longer than the kernel's blocks and chunks;
its underflow fallback; and that an unwritable numba cache does not stop it (a read-only install)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_hmm_family import brute_force, random_problem

from emvsbayes.hmm import compiled_estep, inference


def _statistics(log_initial, log_transition, log_emission, y, centre):
    with np.errstate(divide="ignore"):
        return compiled_estep.estep_statistics(np.exp(log_initial), np.exp(log_transition),
                                               lambda start, stop: log_emission[start:stop], y, centre, keep_gamma=True)


def _kernel_ok(log_initial, log_transition, log_emission, y, centre) -> bool:
    """Whether the compiled pass itself succeeded (no fallback to the numpy recursions)."""
    k = log_emission.shape[1]
    scaled, shift = compiled_estep.scaled_emissions(lambda start, stop: log_emission[start:stop], len(y), k)
    with np.errstate(divide="ignore"):
        initial, transition = np.exp(log_initial), np.exp(log_transition)
    return bool(compiled_estep.kernel(k)(initial, transition, scaled, shift, y, centre, np.empty((len(y), k)),
                                         np.empty((0, k)))[0])


def _assert_statistics(out, gamma, xi, loglik, y, centre, *, rtol=1e-12, atol=1e-14):
    assert out.loglik == pytest.approx(loglik, rel=1e-13, abs=1e-13)
    np.testing.assert_allclose(out.gamma, gamma, rtol=rtol, atol=atol)
    np.testing.assert_allclose(out.xi_sum, xi, rtol=rtol, atol=atol)
    np.testing.assert_allclose(out.counts, gamma.sum(axis=0), rtol=rtol, atol=atol)
    np.testing.assert_allclose(out.first, gamma[0], rtol=rtol, atol=atol)
    dev = y[:, None] - centre[None, :]
    scale = np.abs(dev).max()
    np.testing.assert_allclose(out.sum_dev, (gamma * dev).sum(axis=0), rtol=rtol, atol=atol * scale)
    np.testing.assert_allclose(out.sum_sq_dev, (gamma * dev**2).sum(axis=0), rtol=rtol, atol=atol * scale**2)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("t_len", [1, 2, 5, 7])
def test_compiled_estep_matches_enumeration(k, t_len):
    rng = np.random.default_rng(1000 + 10 * k + t_len)
    for spread in (3.0, 30.0):
        problem = random_problem(rng, k, t_len, spread)
        y, centre = 5.0 * rng.standard_normal(t_len), rng.standard_normal(k)
        loglik, gamma, xi, _, _ = brute_force(*problem)
        assert _kernel_ok(*problem, y, centre)
        _assert_statistics(_statistics(*problem, y, centre), gamma, xi, loglik, y, centre)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_compiled_estep_with_emissions_a_thousand_nats_apart(k):
    # Log emissions uniform on [-1000, 0]: after the shift most scaled emissions are exp(-hundreds), many 0.
    # With every transition possible the compiled pass needs no fallback (each normaliser is at least the
    # smallest transition probability) and still matches enumeration.
    rng = np.random.default_rng(77 + k)
    for t_len in (1, 2, 6):
        log_initial, log_transition, _ = random_problem(rng, k, t_len)
        log_emission = -1000.0 * rng.random((t_len, k))
        problem = (log_initial, log_transition, log_emission)
        y, centre = rng.standard_normal(t_len), rng.standard_normal(k)
        loglik, gamma, xi, _, _ = brute_force(*problem)
        assert _kernel_ok(*problem, y, centre)
        out = _statistics(*problem, y, centre)
        assert np.all(np.isfinite(out.gamma)) and np.all(np.isfinite(out.xi_sum))
        _assert_statistics(out, gamma, xi, loglik, y, centre)


@pytest.mark.parametrize("k", [3, 4])
def test_compiled_estep_matches_the_numpy_recursions_on_a_long_series(k):
    # 20000 steps: many of the kernel's summation blocks (1024 steps) and emission chunks (8192), a forbidden
    # move (0 -> K - 1; the chain stays irreducible: with an absorbing state, the backward probabilities of
    # leaving it underflow to 0 over a long series and the kernel rightly hands over to the log-space
    # recursions) and emissions spread over tens of nats.
    rng = np.random.default_rng(90 + k)
    t_len = 20_000
    log_initial, _, log_emission = random_problem(rng, k, t_len, spread=20.0)
    transition = rng.dirichlet(np.ones(k), size=k) + 4 * np.eye(k)
    transition[0, -1] = 0.0
    transition /= transition.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        log_transition = np.log(transition)
    y, centre = rng.standard_normal(t_len), rng.standard_normal(k)
    reference = inference.forward_backward(log_initial, log_transition, log_emission)
    assert _kernel_ok(log_initial, log_transition, log_emission, y, centre)
    out = _statistics(log_initial, log_transition, log_emission, y, centre)
    assert out.loglik == pytest.approx(reference.loglik, rel=1e-12)
    np.testing.assert_allclose(out.gamma, reference.gamma, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out.xi_sum, reference.xi_sum, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(out.counts, reference.gamma.sum(axis=0), rtol=1e-11)
    np.testing.assert_allclose(out.sum_dev, reference.gamma.T @ y - centre * reference.gamma.sum(axis=0),
                               rtol=1e-9, atol=1e-8)


def test_underflow_is_reported_and_the_numpy_recursions_take_over():
    # The case of tests/test_hmm_family.py: state 1 cannot follow state 0 and time 1's emission is 800 nats
    # likelier in state 1, so the scaled quantities underflow to 0.
    log_initial = np.log([1.0, 1e-300])
    with np.errstate(divide="ignore"):
        log_transition = np.log([[1.0, 0.0], [0.5, 0.5]])
    log_emission = np.array([[0.0, 0.0], [-800.0, 0.0], [0.0, 0.0]])
    y, centre = np.array([0.5, 1.0, -2.0]), np.array([0.0, 1.0])
    loglik, gamma, xi, _, _ = brute_force(log_initial, log_transition, log_emission)
    assert not _kernel_ok(log_initial, log_transition, log_emission, y, centre)
    _assert_statistics(_statistics(log_initial, log_transition, log_emission, y, centre), gamma, xi, loglik, y, centre)


def test_a_time_point_impossible_in_every_state_gives_minus_infinity():
    log_emission = np.array([[0.0, -1.0], [-np.inf, -np.inf], [0.0, 0.0]])
    with np.errstate(all="ignore"):
        out = _statistics(np.log([0.5, 0.5]), np.log([[0.9, 0.1], [0.1, 0.9]]), log_emission, np.zeros(3), np.zeros(2))
    assert out.loglik == -np.inf


def test_without_a_writable_numba_cache_the_kernel_is_compiled_in_the_process(tmp_path):
    # A read-only install under a read-only home: numba finds no place for its cache and raises at
    # decoration; compiled_estep.njit_cached then compiles without it. Simulated (the tests may run as root,
    # for whom no directory is read-only): a file named __pycache__ beside the module and XDG_CACHE_HOME
    # below a regular file. Warnings are errors in that process.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__pycache__").write_text("not a directory")
    (package / "tiny.py").write_text(textwrap.dedent("""
        from emvsbayes.hmm.compiled_estep import njit_cached

        def double(x):
            return 2 * x

        double = njit_cached(double)
    """))
    (tmp_path / "file").write_text("")
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env |= {"XDG_CACHE_HOME": str(tmp_path / "file" / "cache"), "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join([str(package), env.get("PYTHONPATH", "")])}
    code = "import tiny; assert tiny.double(21) == 42; assert not tiny.double._cache_hits; print(tiny.double._cache)"
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "NullCache" in proc.stdout
