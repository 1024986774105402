"""Variational inference as a third engine: ADVI on the same PyMC model, with PSIS's Pareto k of the answer.

ADVI (PyMC's own ``pm.fit``) fits a Gaussian q on the unconstrained scale by maximising the ELBO with
stochastic gradients: ``"meanfield"`` (independent coordinates) or ``"fullrank"`` (any covariance).
On a mixture it is known to lock onto one labelling (like EM: the ELBO of a q spread over two mirror
modes is lower than that of a q on one) and to understate the spread (mean-field: the variance it
finds is 1 / the posterior precision's diagonal, not the marginal variance).

Whether q can be trusted is measured, not assumed: draws phi_s ~ q give importance ratios
log p(phi_s, y) - log q(phi_s) (log posterior with the transforms' Jacobian, up to a constant), and
the Pareto k of their upper tail (Yao, Vehtari, Simpson & Gelman 2018, "Yes, but did it work?") says
how far importance sampling from q, and so q itself, is off: k < 0.5 good, 0.5-0.7 usable with care,
> 0.7 the approximation is unreliable. Pathfinder is not offered: its maintained implementation
(pymc-extras 0.15.1) requires pymc < 6.4 (pip would downgrade PyMC to 6.3.2).

Noise: the answer is the last iterate of a stochastic optimiser. :class:`VIFit` records how much the
mean and sd of q still moved over the last quarter of the iterations (``mean_jitter``, ``sd_jitter``),
the scale on which two runs' answers differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ASSUMES", "METHODS", "ParetoDiagnostic", "VIFit", "elbo_window_means", "fit_vi", "pareto_k",
           "fit_vi_programs", "vi_draws"]

#: What each method assumes, one sentence for the report.
ASSUMES = {
    "meanfield": ("Mean-field ADVI: the posterior is a Gaussian with independent coordinates on the unconstrained "
                  "scale, fitted by maximising the ELBO (one mode; spread understated where parameters correlate)."),
    "fullrank": ("Full-rank ADVI: the posterior is one correlated Gaussian on the unconstrained scale, fitted by "
                 "maximising the ELBO (one mode, no skew)."),
}

#: Our method names -> PyMC's inference classes' names in ``pm.fit``.
METHODS = {"meanfield": "advi", "fullrank": "fullrank_advi"}

#: Every this many iterations of the last quarter, q's mean and sd are recorded for the jitter.
JITTER_EVERY = 10


@dataclass(frozen=True, slots=True)
class VIFit:
    """A fitted ADVI approximation q = N(mean, cov) on the unconstrained scale.

    ``method`` ``"meanfield"`` or ``"fullrank"``; ``point_map_info`` how the flat vector (P,) splits into
    the model's value variables (PyMC's ``DictToArrayBijection`` layout); ``mean`` (P,), ``cov`` (P, P);
    ``elbo`` (n_iter,) the ELBO estimate at every iteration (``-approx.hist``; noisy, one Monte Carlo
    estimate per step); ``mean_jitter``, ``sd_jitter`` (P,) the sd over the last quarter's recorded
    iterates of q's mean and sd.
    """

    method: str
    point_map_info: tuple
    mean: np.ndarray
    cov: np.ndarray
    elbo: np.ndarray
    mean_jitter: np.ndarray
    sd_jitter: np.ndarray

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(np.diagonal(self.cov))

    @property
    def value_names(self) -> tuple[str, ...]:
        return tuple(entry[0] for entry in self.point_map_info)


def fit_vi(model, method: str, n_iter: int, seed: int, *, start: dict | None = None, learning_rate: float = 0.005,
           n_mc: int = 10, compile_mode: str | None = None) -> VIFit:
    """ADVI of ``model`` with ``pm.fit`` (Adam, ``learning_rate``; ``n_mc`` Monte Carlo draws per ELBO gradient).

    ``start`` constrained starting values for q's mean (e.g. an EM answer through the family's
    ``initvals``): on a mixture it picks the labelling q settles on. ``compile_mode`` the PyTensor mode the step
    function is compiled in (None: PyTensor's default, numba here: ~30 s to compile on a first run, ~1 s
    once cached; ``"FAST_COMPILE"`` runs the same graph without compiling it, ~8 s for 3000 steps).
    """
    import pymc as pm
    import pytensor

    from emvsbayes.ladder.laplace import unconstrained_start

    if method not in METHODS:
        raise ValueError(f"unknown VI method {method!r}: use one of {sorted(METHODS)}")
    if n_iter < 8:
        raise ValueError(f"n_iter = {n_iter} is too few iterations for ADVI: use at least 8")
    kwargs = {"model": model, "random_seed": seed}
    if start is not None:
        # As symbolic constants: PyMC maps a start given on the unconstrained scale back through each
        # transform with tensor operations, which fail on a plain array for the LKJ Cholesky transform.
        kwargs["start"] = {name: pytensor.tensor.as_tensor_variable(value)
                           for name, value in unconstrained_start(model, start).items()}
    inference = pm.ADVI(**kwargs) if method == "meanfield" else pm.FullRankADVI(**kwargs)
    approx = inference.approx
    moments = pytensor.function([], [approx.mean, approx.cov], mode=compile_mode)
    recorded = []
    last_quarter = n_iter - n_iter // 4

    def record(_approx, _losses, i):
        if i >= last_quarter and i % JITTER_EVERY == 0:
            mean, cov = moments()
            recorded.append((np.array(mean), np.sqrt(np.diagonal(np.array(cov)))))

    inference.fit(n_iter, progressbar=False, obj_optimizer=pm.adam(learning_rate=learning_rate), obj_n_mc=n_mc,
                  callbacks=[record], compile_kwargs=None if compile_mode is None else {"mode": compile_mode})
    mean, cov = (np.asarray(x, dtype=float) for x in moments())
    means = np.array([r[0] for r in recorded])
    sds = np.array([r[1] for r in recorded])
    ordering = approx.groups[0].ordering
    info = tuple((name, shape, sl.stop - sl.start, dtype)
                 for name, sl, shape, dtype in sorted(ordering.values(), key=lambda entry: entry[1].start))
    if len(recorded) < 2:  # too few iterations to see the optimiser's spread
        mean_jitter = sd_jitter = np.full(mean.size, np.nan)
    else:
        mean_jitter, sd_jitter = means.std(axis=0, ddof=1), sds.std(axis=0, ddof=1)
    return VIFit(method, info, mean, (cov + cov.T) / 2, -np.asarray(approx.hist, dtype=float), mean_jitter,
                 sd_jitter)


def fit_vi_programs(programs, method: str, seed: int, *, start: dict | None = None) -> VIFit:
    """:func:`fit_vi` on a model's exported ADVI program (:mod:`emvsbayes.ladder.programs`; its
    ``settings`` fix the iterations, learning rate and Monte Carlo draws): the same q, objective and Adam
    steps, JAX's random stream instead of PyTensor's, no PyMC."""
    if method not in METHODS:
        raise ValueError(f"unknown VI method {method!r}: use one of {sorted(METHODS)}")
    mu0 = programs.unconstrained_start(start) if start is not None else programs.unconstrained_start({})
    mean, cov, losses, means, sds = (np.asarray(x, dtype=float) for x in programs.callable(f"advi_{method}")(
        np.uint32(seed % 2**32), mu0))
    if not np.all(np.isfinite(losses)) or not np.all(np.isfinite(cov)):
        raise FloatingPointError(f"NaN occurred in the {method} ADVI optimisation")
    if len(means) < 2:
        mean_jitter = sd_jitter = np.full(mean.size, np.nan)
    else:
        mean_jitter, sd_jitter = means.std(axis=0, ddof=1), sds.std(axis=0, ddof=1)
    return VIFit(method, programs.point_map_info, mean, (cov + cov.T) / 2, -losses, mean_jitter, sd_jitter)


def elbo_window_means(elbo: np.ndarray, n_windows: int) -> np.ndarray:
    """Mean ELBO over ``n_windows`` consecutive equal windows (the trailing remainder dropped): the
    per-step estimates are noisy; their window means show the trend."""
    width = len(elbo) // n_windows
    if width < 1:
        raise ValueError(f"{len(elbo)} iterations cannot make {n_windows} windows")
    return np.asarray(elbo[: width * n_windows], dtype=float).reshape(n_windows, width).mean(axis=1)


def _draw_unconstrained(fit: VIFit, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    chol = np.linalg.cholesky(fit.cov)
    return fit.mean + rng.standard_normal((n_draws, fit.mean.size)) @ chol.T


def vi_draws(model, fit: VIFit, n_draws: int, rng: np.random.Generator, *, constrain=None) -> dict[str, np.ndarray]:
    """Draws from q mapped to the constrained scale: name -> (S, ...) for every free variable and
    deterministic, plus ``"_unconstrained"`` (S, P). ``constrain(phi) -> {name: (S, ...)}`` replaces the
    model's transforms (an exported program's; ``model`` then unused)."""
    from emvsbayes.ladder.laplace import constrained_values

    phi = _draw_unconstrained(fit, n_draws, rng)
    values = constrained_values(model, fit.point_map_info, phi) if constrain is None else constrain(phi)
    return {**values, "_unconstrained": phi}


@dataclass(frozen=True, slots=True)
class ParetoDiagnostic:
    """PSIS of q against the posterior: ``khat`` the Pareto k of the importance ratios' upper tail;
    ``log_ratios`` (S,) log p(phi_s, y) - log q(phi_s); ``log_weights`` (S,) the smoothed, normalised log
    weights (draws from q reweighted towards the posterior); ``n_draws`` S."""

    khat: float
    log_ratios: np.ndarray
    log_weights: np.ndarray
    n_draws: int

    @property
    def verdict(self) -> str:
        """The usual reading of k (Vehtari et al. 2024, PSIS): good, ok, or unreliable."""
        return "good" if self.khat < 0.5 else "ok" if self.khat <= 0.7 else "unreliable"


def log_q(fit: VIFit, phi: np.ndarray) -> np.ndarray:
    """log N(phi | mean, cov) of each row of ``phi`` (S, P)."""
    chol = np.linalg.cholesky(fit.cov)
    white = np.linalg.solve(chol, (np.atleast_2d(phi) - fit.mean).T)  # (P, S)
    log_det = 2.0 * np.sum(np.log(np.diagonal(chol)))
    return -0.5 * (np.sum(white**2, axis=0) + log_det + fit.mean.size * np.log(2 * np.pi))


def log_posterior(model, point_map_info: tuple, phi: np.ndarray) -> np.ndarray:
    """log p(phi, y) (Jacobian of the transforms included) at each row of ``phi`` (S, P)."""
    from pymc.blocking import DictToArrayBijection, RaveledVars

    logp = model.compile_logp(jacobian=True)
    return np.array([float(logp(DictToArrayBijection.rmap(RaveledVars(np.asarray(one, dtype=float), point_map_info))))
                     for one in np.atleast_2d(phi)])


def pareto_k(model, fit: VIFit, n_draws: int, rng: np.random.Generator, *, log_posterior_batch=None
             ) -> ParetoDiagnostic:
    """Pareto-smoothed importance sampling of ``n_draws`` draws from q (arviz-stats' ``psislw``).
    ``log_posterior_batch(phi (S, P)) -> (S,)`` replaces the model's (an exported program's; ``model``
    then unused)."""
    phi = _draw_unconstrained(fit, n_draws, rng)
    log_p = (log_posterior(model, fit.point_map_info, phi) if log_posterior_batch is None
             else np.asarray(log_posterior_batch(phi), dtype=float))
    log_ratios = log_p - log_q(fit, phi)
    if not np.all(np.isfinite(log_ratios)):
        raise ValueError("a draw from q has a non-finite log posterior: q reaches outside the model's support")
    log_weights, khat = smoothed_weights(log_ratios)
    return ParetoDiagnostic(khat, log_ratios, log_weights, n_draws)


def smoothed_weights(log_ratios: np.ndarray) -> tuple[np.ndarray, float]:
    """(Pareto-smoothed log importance weights, k-hat) for weights proportional to exp(``log_ratios``).

    arviz-stats' ``psislw`` takes log-likelihoods, as LOO uses it (LOO's ratios are 1 / p(y_i | theta)): its
    weights are exp(-argument), so the log ratios go in negated (shifted to their maximum for range)."""
    from arviz_stats.base import array_stats

    log_weights, khat = array_stats.psislw(-(log_ratios - log_ratios.max()), r_eff=1.0)
    return np.asarray(log_weights, dtype=float), float(khat)
