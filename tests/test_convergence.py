"""emvsbayes.sampling.convergence against ArviZ (the reference, arviz-stats' array interface).

Rank-normalised split R-hat and bulk ESS must be ArviZ's numbers to rounding, on chains chosen to reach
every branch of the estimators: independent draws, strong positive autocorrelation (Geyer's sequence
truncated early), antithetic chains (the last even lag and the S log10 S cap), chains stuck at different
locations (R-hat well above 1), tied values (average ranks), heavy tails, an odd number of draws (the
middle draw dropped when splitting), a single chain (ESS only), draws too few to say anything, and a
variable whose folded draws are constant.

The relative tolerance 1e-13 allows for summation order: the two compute the same sums in different orders
(pairs of lags here, single lags there; FFT lengths 2n here, SciPy's next fast length there).
"""

from __future__ import annotations

import numpy as np
import pytest
from arviz_stats.base import array_stats

from emvsbayes.sampling.convergence import ess_bulk, rhat_rank

RTOL = 1e-13


def _ar1(phi: float, shape: tuple[int, ...], rng) -> np.ndarray:
    noise = rng.standard_normal(shape)
    x = np.empty(shape)
    x[..., 0] = noise[..., 0]
    for t in range(1, shape[-1]):
        x[..., t] = phi * x[..., t - 1] + noise[..., t]
    return x


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261204)
    return {
        "independent": rng.standard_normal((4, 4, 300)),
        "autocorrelated": _ar1(0.95, (4, 4, 400), rng),
        "antithetic_odd_length": _ar1(-0.6, (3, 2, 301), rng),
        "stuck_chains": rng.standard_normal((3, 4, 200)) + 0.5 * np.arange(4)[:, None],
        "ties": np.round(rng.standard_normal((3, 2, 300)), 1),
        "heavy_tails": rng.standard_t(1.5, (3, 4, 500)),
        "two_values": np.where(np.arange(200) % 2 == 0, 1.0, 2.0) * np.ones((1, 3, 1)),
    }


@pytest.mark.parametrize("case", sorted(_cases()))
def test_rhat_and_bulk_ess_are_arviz_numbers(case):
    x = _cases()[case]
    with np.errstate(invalid="ignore"):  # ArviZ's 0 / 0 for the constant folded draws of "two_values"
        expected_rhat = array_stats.rhat(x, chain_axis=-2, draw_axis=-1)
        expected_ess = array_stats.ess(x, chain_axis=-2, draw_axis=-1, method="bulk")
    np.testing.assert_allclose(rhat_rank(x), expected_rhat, rtol=RTOL)
    np.testing.assert_allclose(ess_bulk(x), expected_ess, rtol=RTOL)


def test_the_cases_reach_the_branches_they_are_named_for():
    """Not vacuous: the chains stuck apart have R-hat far above 1, the autocorrelated ones an ESS far below
    the draws, the antithetic ones an ESS above the draws."""
    cases = _cases()
    assert np.all(rhat_rank(cases["stuck_chains"]) > 1.1)
    assert np.all(ess_bulk(cases["autocorrelated"]) < 0.1 * 4 * 400)
    assert np.all(ess_bulk(cases["antithetic_odd_length"]) > 2 * 301)


def test_one_chain_has_an_ess_but_no_rhat_and_four_draws_are_the_fewest():
    rng = np.random.default_rng(7)
    one_chain = _ar1(0.5, (3, 1, 400), rng)
    assert np.all(np.isnan(rhat_rank(one_chain)))
    np.testing.assert_allclose(ess_bulk(one_chain), array_stats.ess(one_chain, chain_axis=-2, draw_axis=-1,
                                                                     method="bulk"), rtol=RTOL)
    short = rng.standard_normal((2, 4, 3))
    assert np.all(np.isnan(rhat_rank(short))) and np.all(np.isnan(ess_bulk(short)))
    constant = np.ones((2, 4, 50))
    assert np.all(np.isnan(rhat_rank(constant)))
    np.testing.assert_array_equal(ess_bulk(constant), 200.0)  # every draw the same: ArviZ's size
