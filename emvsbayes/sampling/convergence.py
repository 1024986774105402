"""Rank-normalised split R-hat and bulk effective sample size, in numpy alone.

Both follow Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021), "Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis 16(2), and agree
with ArviZ's ``rhat`` (method ``"rank"``) and ``ess`` (method ``"bulk"``) to rounding
(tests/test_convergence.py). They exist for a study's Dask workers: importing ArviZ brings xarray,
pandas and SciPy's stats into every worker process (0.5-0.8 s of its start, repeated per worker), for
two numbers per replicate. Runs and reports use ArviZ itself.

Arrays are (..., chain, draw); every function reduces the last two axes.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

__all__ = ["ess_bulk", "rhat_rank"]

#: Blom's offset in the fractional ranks (r - 3/8) / (S + 1/4) that rank normalisation maps through the
#: normal quantile function (the paper's choice).
RANK_OFFSET = 3 / 8


#: Fewest draws per chain either diagnostic is computed from (NaN below), and fewest chains for R-hat: one
#: chain's halves say little about whether other chains would agree (ArviZ's rules too).
MIN_DRAWS = 4
MIN_CHAINS_RHAT = 2


def rhat_rank(x) -> np.ndarray:
    """Rank-normalised split R-hat: the larger of the split R-hat of the rank-normalised draws (location)
    and of the rank-normalised folded draws ``|x - median|`` (scale)."""
    x = np.asarray(x, dtype=float)
    if x.shape[-2] < MIN_CHAINS_RHAT or x.shape[-1] < MIN_DRAWS or not np.all(np.isfinite(x)):
        return np.full(x.shape[:-2], np.nan)
    split = _split_chains(x)
    # A variable whose draws are constant has no R-hat (0 / 0); one whose distances from the median are
    # all equal (two values, alternating) has only the location's.
    with np.errstate(divide="ignore", invalid="ignore"):
        bulk = _rhat(_z_scale(split))
        folded = _rhat(_z_scale(_fold(split)))
    return np.fmax(bulk, folded)


def ess_bulk(x) -> np.ndarray:
    """Bulk effective sample size: the ESS of the rank-normalised split chains."""
    x = np.asarray(x, dtype=float)
    if x.shape[-1] < MIN_DRAWS or not np.all(np.isfinite(x)):
        return np.full(x.shape[:-2], np.nan)
    return _ess(_z_scale(_split_chains(x)))


def _split_chains(x: np.ndarray) -> np.ndarray:
    """Each chain cut into its first and second half (the middle draw dropped when the length is odd), so
    that a trend inside a chain shows as halves that disagree."""
    half = x.shape[-1] // 2
    return np.concatenate([x[..., :half], x[..., x.shape[-1] - half:]], axis=-2)


def _fold(x: np.ndarray) -> np.ndarray:
    """Distance from the median of all the draws of each variable."""
    flat = x.reshape(*x.shape[:-2], -1)
    return np.abs(x - np.median(flat, axis=-1)[..., None, None])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # Runs of equal values: each gets the mean of the ranks it spans.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Draws replaced by the normal quantiles of their fractional ranks among all the draws of their
    variable (all chains pooled): robust to heavy tails, and a function of the ranks alone."""
    flat = x.reshape(-1, x.shape[-2] * x.shape[-1])
    size = flat.shape[1]
    ranks = np.stack([_average_ranks(row) for row in flat])
    z = ndtri((ranks - RANK_OFFSET) / (size - 2 * RANK_OFFSET + 1))
    return z.reshape(x.shape)


def _rhat(x: np.ndarray) -> np.ndarray:
    """Classic R-hat of (..., chain, draw): sqrt of the pooled variance estimate over the mean within-chain variance."""
    n = x.shape[-1]
    within = np.mean(np.var(x, axis=-1, ddof=1), axis=-1)
    between = n * np.var(np.mean(x, axis=-1), axis=-1, ddof=1)
    return np.sqrt(((n - 1) / n * within + between / n) / within)


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Biased (divided by n) autocovariance of every chain along the last axis, lags 0 .. n - 1, by FFT."""
    n = x.shape[-1]
    centred = x - x.mean(axis=-1, keepdims=True)
    size = 2 * n  # zero padding: a circular correlation of length 2n holds every linear lag < n
    spectrum = np.fft.rfft(centred, n=size, axis=-1)
    return np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=-1)[..., :n] / n


def _ess(x: np.ndarray) -> np.ndarray:
    lead = x.shape[:-2]
    flat = x.reshape(-1, *x.shape[-2:])
    out = np.array([_ess_one(chains) for chains in flat])
    return out.reshape(lead)


def _ess_one(chains: np.ndarray) -> float:
    """ESS of one variable's (chain, draw) array: S / tau, with tau from the autocorrelations combined
    across chains, summed in pairs of lags (2k, 2k + 1) while the pair sums stay positive (Geyer's initial
    positive sequence) and made non-increasing (his initial monotone sequence): the paper's equations 10-11."""
    m, n = chains.shape
    total = m * n
    if np.ptp(chains) < np.finfo(float).resolution:
        return float(total)
    acov = _autocovariance(chains)  # (m, n)
    mean_var = np.mean(acov[:, 0]) * n / (n - 1)  # W: the mean within-chain variance
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus += np.var(np.mean(chains, axis=1), ddof=1)
    # Combined autocorrelation at lags 1, 2, ...; lag 0 is 1 by definition (the formula would give
    # (n - 1) / n plus the between-chain share there).
    rho = 1.0 - (mean_var - np.mean(acov, axis=0)) / var_plus
    # Pairs 0 .. k - 1 are kept whole; the pair that ends the search (the first whose sum is not positive,
    # or the last whose lags fit before n - 1) adds its even lag alone: kept if positive (this lowers the
    # variance of the estimate for antithetic chains), or if the pair's sum was not negative, else dropped.
    pair_sums = [1.0 + rho[1]]
    ending_even = 1.0
    k = 1
    while pair_sums[-1] > 0 and 2 * k + 1 < n - 1:
        even, odd = rho[2 * k], rho[2 * k + 1]
        pair_sums.append(even + odd if even + odd >= 0 else 0.0)
        ending_even = even if (even + odd >= 0 or even > 0) else 0.0
        k += 1
    whole = np.minimum.accumulate(np.asarray(pair_sums[:-1]))
    tau = -1 + 2 * np.sum(whole) + ending_even
    # An antithetic chain's tau can fall towards 0; the cap keeps its ESS at most S log10(S).
    tau = max(tau, 1 / np.log10(total))
    return float(total / tau) if np.isfinite(tau) else np.nan
