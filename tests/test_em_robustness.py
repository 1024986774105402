"""Numerical robustness of Gaussian-mixture EM at the default reg_covar, over hundreds of generated data
sets: duplicated points, outliers, extreme scales, near-singular covariances, components that empty,
N barely above K. EM either returns finite parameters with a log-likelihood that never fell (beyond what
the regularised M-step may give up, checked inside the loop) or says the fit is degenerate in one line."""

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from emvsbayes.errors import DegenerateFitError
from emvsbayes.gaussian import em
from emvsbayes.gaussian.init import initial_params_restarts
from emvsbayes.gaussian.model import COVARIANCE_TYPES, GaussianMixtureModel


@st.composite
def awkward_data(draw):
    k = draw(st.integers(1, 4))
    n = draw(st.integers(k + 1, 40))
    d = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, size=d)
    kind = draw(st.sampled_from(["plain", "duplicates", "outlier", "collinear", "constant", "tiny", "huge", "far"]))
    if kind == "duplicates":
        x[: n // 2 + 1] = x[0]
    elif kind == "outlier":
        x[0] = x[0] + 1e4
    elif kind == "collinear" and d > 1:
        x[:, -1] = 2.0 * x[:, 0] + 1e-9 * rng.normal(size=n)
    elif kind == "constant":
        x[:, 0] = 3.0
    elif kind == "tiny":
        x = x * 1e-6
    elif kind == "huge":
        x = x * 1e6
    elif kind == "far":
        x = x + 1e6
    covariance = draw(st.sampled_from(COVARIANCE_TYPES))
    init = draw(st.sampled_from(["k-means++", "random", "random_from_data"]))
    return x, k, covariance, init, seed


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=awkward_data())
def test_em_is_finite_and_monotone_or_says_degenerate(case):
    x, k, covariance, init, seed = case
    model = GaussianMixtureModel(k, covariance)  # default reg_covar = 1e-6
    try:
        inits = initial_params_restarts(model, x, 1, init, np.random.default_rng(seed))
        fit = em.fit(model, x, inits[0], max_iter=200)
    except DegenerateFitError as error:
        message = str(error)
        assert "\n" not in message and "reg_covar" in message  # says what to change
        event("degenerate, said so")
        return
    event("fitted")
    path = fit.loglik_path
    assert np.all(np.isfinite(path))
    for name, value in fit.params.variables().items():
        assert np.all(np.isfinite(value)), name
    np.testing.assert_allclose(fit.params.w.sum(), 1.0, rtol=1e-12)
    assert np.all(fit.params.w >= 0)
