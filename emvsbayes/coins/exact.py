"""The exact posterior of the coin mixture, by enumerating every assignment of sets to coins.

Given an assignment z, the Beta prior is conjugate: theta_k | z, data ~ Beta(a + H_k, b + T_k), where
H_k and T_k are the heads and tails of the sets given to coin k. So the posterior of theta is a finite
mixture of products of Betas, weighted by

    p(z | data)  oc  p(z) * prod_k B(a + H_k, b + T_k) / B(a, b),

with p(z) = prod_k w_k^{n_k} for fixed weights, or the Dirichlet-multinomial probability
Gamma(K alpha) / Gamma(K alpha + N) prod_k Gamma(alpha + n_k) / Gamma(alpha) for estimated weights.
That gives "what the sampler should find" and the oracle for the PyMC engine's tests: posterior
means and sds, the distribution of the sorted thetas (label-invariant, and the exact posterior of the
identified model, because the prior is exchangeable), membership probabilities and the evidence p(data).

Assignments with the same per-coin counts (n_k, H_k, T_k) contribute the same Beta product, so they are
merged before any density is evaluated.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import betaln, gammaln, logsumexp

from emvsbayes.coins.model import CoinMixture

#: Enumeration is K^N assignments; beyond this many it is too slow to be a convenience.
MAX_ASSIGNMENTS = 2**20


@dataclass(frozen=True, slots=True)
class ExactPosterior:
    """Exact posterior summaries. Arrays are over ``component`` (K,) unless said otherwise.

    ``theta_sorted_*`` describe the k-th smallest theta (label-invariant). ``grid`` (G,) and
    ``theta_density`` (K, G) are the marginal densities of each theta_k; ``theta_sorted_density``
    (K, G) those of the sorted thetas. ``membership`` (N, K) is P(z_i = k | data).
    """

    log_evidence: float
    n_assignments: int
    theta_mean: np.ndarray
    theta_sd: np.ndarray
    w_mean: np.ndarray
    w_sd: np.ndarray
    theta_sorted_mean: np.ndarray
    theta_sorted_sd: np.ndarray
    theta_sorted_lower: np.ndarray
    theta_sorted_upper: np.ndarray
    interval_prob: float
    membership: np.ndarray
    grid: np.ndarray
    theta_density: np.ndarray
    theta_sorted_density: np.ndarray
    joint_grid_density: np.ndarray | None  # (G2, G2) density of (theta_0, theta_1) when K == 2


def n_assignments(n_sets: int, n_components: int) -> int:
    return n_components**n_sets


def _assignment_log_weights(model_def: CoinMixture, heads, tosses):
    """(z (Z, N), one-hot (Z, N, K), sets, heads, tails per coin (Z, K), log p(z, data) (Z,)) of every
    assignment z; raises ``ValueError`` when there are more than ``MAX_ASSIGNMENTS``."""
    heads = np.asarray(heads, dtype=np.int64)
    tosses = np.asarray(tosses, dtype=np.int64)
    n, k = len(heads), model_def.n_components
    if n_assignments(n, k) > MAX_ASSIGNMENTS:
        raise ValueError(f"{k}^{n} assignments are too many to enumerate (limit {MAX_ASSIGNMENTS})")
    a, b = model_def.theta_prior

    z = np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64).reshape(-1, n)  # (Z, N)
    onehot = z[:, :, None] == np.arange(k)  # (Z, N, K)
    sets = onehot.sum(axis=1)
    h = np.einsum("znk,n->zk", onehot, heads)
    t = np.einsum("znk,n->zk", onehot, tosses - heads)

    log_choose = gammaln(tosses + 1) - gammaln(heads + 1) - gammaln(tosses - heads + 1)
    log_marginal = (betaln(a + h, b + t) - betaln(a, b)).sum(axis=1) + log_choose.sum()
    alpha = model_def.w_concentration
    if model_def.weights == "estimated":
        log_prior_z = (
            gammaln(k * alpha) - gammaln(k * alpha + n) + (gammaln(alpha + sets) - gammaln(alpha)).sum(axis=1)
        )
    else:
        log_prior_z = (sets * np.log(model_def.equal_weights)).sum(axis=1)
    return z, onehot, sets, h, t, log_prior_z + log_marginal


def log_evidence(model_def: CoinMixture, heads, tosses) -> float:
    """log p(data | K), the same number as :func:`exact_posterior`'s ``log_evidence`` without the posterior's
    densities on their grids (model choice needs only this: ~1 ms against ~0.1 s per K)."""
    return float(logsumexp(_assignment_log_weights(model_def, heads, tosses)[-1]))


def exact_posterior(
    model_def: CoinMixture, heads, tosses, *, interval_prob: float = 0.89, grid_size: int = 2001
) -> ExactPosterior:
    """Enumerate all K^N assignments; raises ``ValueError`` when there are more than ``MAX_ASSIGNMENTS``."""
    z, onehot, sets, h, t, log_weight = _assignment_log_weights(model_def, heads, tosses)
    k = model_def.n_components
    a, b = model_def.theta_prior
    alpha = model_def.w_concentration
    log_evidence = float(logsumexp(log_weight))
    weight = np.exp(log_weight - log_evidence)  # (Z,)

    membership = np.einsum("z,znk->nk", weight, onehot)

    # Merge assignments with identical per-coin counts: same Beta product, same Dirichlet update.
    key = np.concatenate([sets, h, t], axis=1)
    unique, inverse = np.unique(key, axis=0, return_inverse=True)
    group_weight = np.bincount(inverse.ravel(), weights=weight, minlength=len(unique))
    g_sets, g_h, g_t = unique[:, :k], unique[:, k : 2 * k], unique[:, 2 * k :]
    post_a, post_b = a + g_h, b + g_t  # (G, K)

    mean_k = post_a / (post_a + post_b)
    second_k = mean_k * (post_a + 1) / (post_a + post_b + 1)
    theta_mean = group_weight @ mean_k
    theta_sd = np.sqrt(np.maximum(group_weight @ second_k - theta_mean**2, 0.0))

    if model_def.weights == "estimated":
        conc = alpha + g_sets
        total = conc.sum(axis=1, keepdims=True)
        w_mean = group_weight @ (conc / total)
        w_second = group_weight @ (conc * (conc + 1) / (total * (total + 1)))
        w_sd = np.sqrt(np.maximum(w_second - w_mean**2, 0.0))
    else:
        w_mean, w_sd = model_def.equal_weights, np.zeros(k)

    grid = np.linspace(0.0, 1.0, grid_size)
    cdf = stats.beta.cdf(grid[None, None, :], post_a[..., None], post_b[..., None])  # (G, K, grid)
    pdf = stats.beta.pdf(grid[None, None, :], post_a[..., None], post_b[..., None])
    theta_density = np.einsum("g,gkx->kx", group_weight, pdf)

    # P(j-th smallest <= t) = P(at least j of the K thetas are <= t): a Poisson-binomial count over coins.
    count_probs = np.zeros((len(unique), k + 1, grid_size))
    count_probs[:, 0] = 1.0
    for j in range(k):
        p = cdf[:, j][:, None, :]
        shifted = np.concatenate([np.zeros_like(count_probs[:, :1]), count_probs[:, :-1]], axis=1)
        count_probs = count_probs * (1 - p) + shifted * p
    at_least = np.cumsum(count_probs[:, ::-1], axis=1)[:, ::-1]  # at_least[:, m] = P(count >= m)
    sorted_cdf = np.einsum("g,gkx->kx", group_weight, at_least[:, 1:])  # (K, grid)
    sorted_cdf = np.clip(sorted_cdf, 0.0, 1.0)
    survival = 1.0 - sorted_cdf
    sorted_mean = np.trapezoid(survival, grid, axis=1)
    sorted_second = np.trapezoid(2 * grid * survival, grid, axis=1)
    sorted_sd = np.sqrt(np.maximum(sorted_second - sorted_mean**2, 0.0))
    tail = (1 - interval_prob) / 2
    lower = np.array([np.interp(tail, sorted_cdf[j], grid) for j in range(k)])
    upper = np.array([np.interp(1 - tail, sorted_cdf[j], grid) for j in range(k)])
    sorted_density = np.gradient(sorted_cdf, grid, axis=1)

    joint = None
    if k == 2:
        grid2 = np.linspace(0.0, 1.0, 201)
        pdf2 = stats.beta.pdf(grid2[None, None, :], post_a[..., None], post_b[..., None])  # (G, 2, 201)
        joint = np.einsum("g,gx,gy->xy", group_weight, pdf2[:, 0], pdf2[:, 1])

    return ExactPosterior(
        log_evidence=log_evidence,
        n_assignments=len(z),
        theta_mean=theta_mean,
        theta_sd=theta_sd,
        w_mean=np.asarray(w_mean, dtype=float),
        w_sd=np.asarray(w_sd, dtype=float),
        theta_sorted_mean=sorted_mean,
        theta_sorted_sd=sorted_sd,
        theta_sorted_lower=lower,
        theta_sorted_upper=upper,
        interval_prob=interval_prob,
        membership=membership,
        grid=grid,
        theta_density=theta_density,
        theta_sorted_density=sorted_density,
        joint_grid_density=joint,
    )
