"""The Gaussian mixture in PyMC: the same model as :mod:`emvsbayes.gaussian.model`, labels summed out.

w ~ Dirichlet(alpha); mu_k ~ Normal(loc, scale) per coordinate; covariances per structure (below);
x_i ~ sum_k w_k Normal(mu_k, Sigma_k). The component labels are marginalised by ``pm.Mixture``, so the
observed variable ``x`` has a pointwise log-likelihood (dims ``obs``) and posterior predictive draws.

Covariance structures (for D > 1; the free variables are named as here):

- ``full``: ``chol_cov_<k>``, one ``LKJCholeskyCov`` per component (packed lower Cholesky factor);
- ``tied``: ``chol_cov``, one ``LKJCholeskyCov`` shared by all components;
- ``diag``: ``scale`` (component, feature), HalfNormal sds;
- ``spherical``: ``scale`` (component), one HalfNormal sd per component.

In 1-D every structure is a per-component ``sigma`` except ``tied``, which is one ``sigma_tied``.
Whatever the structure, the posterior carries exactly the names EM reports
(:func:`emvsbayes.gaussian.model.parameter_dims`): ``w``, ``mu`` and ``sigma`` (1-D) or ``cov``
(D > 1, a tied covariance repeated for every component).

The identified variant orders the means along the first coordinate: in 1-D ``mu`` itself carries the
ordered transform; for D > 1 the free variables are ``mu_first`` (ordered, component) and ``mu_rest``
(component, feature_rest), stacked into the deterministic ``mu``. The ordered transform maps equal
values to -inf, so the model's own initial point (every mean at the prior location) is not finite for
the identified variant: start it from :func:`initvals_from_params` (the starting values are not put in
the model with ``initval=``, because PyMC then refuses ``compute_log_likelihood``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.special import logsumexp

from emvsbayes.gaussian.model import COVARIANCE_TYPES, GaussianMixtureModel, GaussianParams, as_data_matrix

def _per_coordinate(value, default: np.ndarray, name: str) -> np.ndarray:
    """A prior setting as a (D,) vector: ``None`` -> the data-scaled default, a scalar or 1-tuple repeated."""
    if value is None:
        return default
    arr = np.asarray(value, dtype=float).ravel()
    if arr.size not in (1, default.size):
        raise ValueError(f"prior {name} has {arr.size} values for {default.size} features")
    return np.broadcast_to(arr, default.shape).copy()


def prior_values(model_def: GaussianMixtureModel, x) -> dict[str, np.ndarray]:
    """The priors' numbers for data ``x`` (N, D): ``mu_loc``, ``mu_scale``, ``sigma_scale`` (each (D,)).

    ``None`` in :class:`GaussianPriors` means data mean, 2 x data sd and data sd per coordinate.
    """
    x = as_data_matrix(x)
    sd = x.std(axis=0)
    priors = model_def.priors
    values = {
        "mu_loc": _per_coordinate(priors.mu_loc, x.mean(axis=0), "mu_loc"),
        "mu_scale": _per_coordinate(priors.mu_scale, 2.0 * sd, "mu_scale"),
        "sigma_scale": _per_coordinate(priors.sigma_scale, sd, "sigma_scale"),
    }
    for name in ("mu_scale", "sigma_scale"):
        if not np.all(values[name] > 0):
            raise ValueError(f"prior {name} must be positive (a constant data column gives sd 0): {values[name]}")
    return values


def _lkj_cholesky(pm, name: str, dim: int, eta: float, sigma_scale: np.ndarray):
    """A (D, D) lower Cholesky factor of a covariance with an LKJ(eta) prior on the correlations."""
    packed = pm.LKJCholeskyCov(
        name, n=dim, eta=eta, sd_dist=pm.HalfNormal.dist(sigma=sigma_scale), compute_corr=False
    )
    return pm.math.expand_packed_triangular(dim, packed, lower=True)


def _chol_full(pm, pt, model_def, dim, sigma_scale):
    k = model_def.n_components
    return pt.stack([_lkj_cholesky(pm, f"chol_cov_{j}", dim, model_def.priors.lkj_eta, sigma_scale) for j in range(k)])


def _chol_tied(pm, pt, model_def, dim, sigma_scale):
    chol = _lkj_cholesky(pm, "chol_cov", dim, model_def.priors.lkj_eta, sigma_scale)
    return pt.broadcast_to(chol, (model_def.n_components, dim, dim))


def _chol_diag(pm, pt, model_def, dim, sigma_scale):
    scale = pm.HalfNormal("scale", sigma=sigma_scale, dims=("component", "feature"))
    return scale[:, :, None] * pt.eye(dim)


def _chol_spherical(pm, pt, model_def, dim, sigma_scale):
    # One sd for all coordinates: its prior scale is the root-mean-square of the per-coordinate ones,
    # as a spherical variance is the mean of the coordinate variances.
    scale = pm.HalfNormal("scale", sigma=float(np.sqrt(np.mean(sigma_scale**2))), dims="component")
    return scale[:, None, None] * pt.eye(dim)


#: Covariance structure -> builder of the (K, D, D) lower Cholesky factors of the covariances (D > 1).
_CHOLESKY_BUILDERS = {
    "full": _chol_full,
    "tied": _chol_tied,
    "diag": _chol_diag,
    "spherical": _chol_spherical,
}


def build_model(model_def: GaussianMixtureModel, x, *, columns: Sequence[str] | None = None):
    """A ``pymc.Model`` of the mixture for data ``x`` of shape (N, D) (or (N,) for 1-D).

    Coordinates ``component``, ``obs`` and, for D > 1, ``feature`` and ``feature_bis`` (named by
    ``columns`` if given) and ``feature_rest`` (the coordinates after the first, used by the identified
    variant's free means). The observed variable is ``x``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    if model_def.covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"unknown covariance_type {model_def.covariance_type!r}; one of {COVARIANCE_TYPES}")
    x = as_data_matrix(x)
    n, dim = x.shape
    k = model_def.n_components
    prior = prior_values(model_def, x)
    ordered = {"transform": pm.distributions.transforms.ordered} if model_def.ordered and k > 1 else {}
    coords: dict = {"component": np.arange(k), "obs": np.arange(n)}
    if dim > 1:
        features = list(columns) if columns is not None else list(range(dim))
        if len(features) != dim:
            raise ValueError(f"{len(features)} column names for {dim} features")
        coords |= {"feature": features, "feature_bis": features, "feature_rest": features[1:]}

    with pm.Model(coords=coords) as model:
        w = pm.Dirichlet("w", a=np.full(k, float(model_def.priors.w_concentration)), dims="component")
        if dim == 1:
            mu = pm.Normal("mu", mu=prior["mu_loc"][0], sigma=prior["mu_scale"][0], dims="component", **ordered)
            if model_def.covariance_type == "tied":
                sigma_tied = pm.HalfNormal("sigma_tied", sigma=prior["sigma_scale"][0])
                sigma = pm.Deterministic("sigma", pt.broadcast_to(sigma_tied, (k,)), dims="component")
            else:
                sigma = pm.HalfNormal("sigma", sigma=prior["sigma_scale"][0], dims="component")
            components = pm.Normal.dist(mu=mu, sigma=sigma)
            pm.Mixture("x", w=w, comp_dists=components, observed=x[:, 0], dims="obs")
        else:
            if ordered:
                mu_first = pm.Normal(
                    "mu_first", mu=prior["mu_loc"][0], sigma=prior["mu_scale"][0], dims="component", **ordered
                )
                mu_rest = pm.Normal(
                    "mu_rest", mu=prior["mu_loc"][1:], sigma=prior["mu_scale"][1:], dims=("component", "feature_rest")
                )
                mu = pm.Deterministic(
                    "mu", pt.concatenate([mu_first[:, None], mu_rest], axis=1), dims=("component", "feature")
                )
            else:
                mu = pm.Normal("mu", mu=prior["mu_loc"], sigma=prior["mu_scale"], dims=("component", "feature"))
            chol = _CHOLESKY_BUILDERS[model_def.covariance_type](pm, pt, model_def, dim, prior["sigma_scale"])
            pm.Deterministic("cov", chol @ chol.mT, dims=("component", "feature", "feature_bis"))
            # Batch axis K, support D: pm.Mixture mixes over the last batch axis.
            components = pm.MvNormal.dist(mu=mu, chol=chol)
            pm.Mixture("x", w=w, comp_dists=components, observed=x, dims=("obs", "feature"))
    return model


def _covariances(params: GaussianParams) -> np.ndarray:
    """Covariances (K, D, D) from the Cholesky factors of the precisions, whatever the structure.

    precision = P P^T for full and tied (P as scikit-learn keeps it), 1 / sd^2 for diag and spherical.
    """
    k = params.w.shape[0]
    mu = params.mu.reshape(k, -1)
    dim = mu.shape[1]
    p = params.prec_chol
    if params.covariance_type == "full":
        p = p.reshape(k, dim, dim)
        return np.linalg.inv(p @ np.swapaxes(p, -1, -2))
    if params.covariance_type == "tied":
        p = p.reshape(dim, dim)
        return np.broadcast_to(np.linalg.inv(p @ p.T), (k, dim, dim)).copy()
    if params.covariance_type == "diag":
        return np.eye(dim) / p.reshape(k, dim)[:, None, :] ** 2
    if params.covariance_type == "spherical":
        return np.eye(dim) / p.reshape(k)[:, None, None] ** 2
    raise ValueError(f"unknown covariance_type {params.covariance_type!r}")


def _strictly_increasing(values: np.ndarray) -> np.ndarray:
    """Nudge ties apart: the ordered transform needs strictly increasing values (a tie is log 0)."""
    out = np.array(values, dtype=float)
    for i in range(1, out.size):
        floor = out[i - 1] + 1e-6 * max(1.0, abs(out[i - 1]))
        out[i] = max(out[i], floor)
    return out


def _packed_cholesky(cov: np.ndarray) -> np.ndarray:
    """The packed lower Cholesky factor, row by row, as ``LKJCholeskyCov``'s value is stored."""
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as err:
        raise ValueError(
            "an EM covariance is not positive definite; refit EM with a larger reg_covar to start from it"
        ) from err
    return chol[np.tril_indices(cov.shape[0])]


def initvals_from_params(model_def: GaussianMixtureModel, params_list: Sequence[GaussianParams]) -> list[dict]:
    """Starting points, one per EM answer, keyed by the model's free variables (untransformed values).

    For the identified variant the components are sorted by the first coordinate of the mean (ties
    nudged apart). Weights are pulled off zero (the Dirichlet's open support) and renormalised.
    ``LKJCholeskyCov`` variables take the packed lower Cholesky factor of the covariance.
    """
    k = model_def.n_components
    starts = []
    for params in params_list:
        if params.w.shape != (k,):
            raise ValueError(f"EM answer has {params.w.shape[0]} components, the model {k}")
        mu = params.mu.reshape(k, -1)
        dim = mu.shape[1]
        cov = _covariances(params)
        order = np.argsort(mu[:, 0], kind="stable") if model_def.ordered else np.arange(k)
        mu, cov = mu[order], cov[order]
        w = np.clip(params.w[order], 1e-3, None)
        start: dict[str, np.ndarray] = {"w": w / w.sum()}
        first = _strictly_increasing(mu[:, 0]) if model_def.ordered and k > 1 else mu[:, 0]
        if dim == 1:
            start["mu"] = first
            if model_def.covariance_type == "tied":
                start["sigma_tied"] = np.sqrt(np.mean(cov[:, 0, 0]))
            else:
                start["sigma"] = np.sqrt(cov[:, 0, 0])
        else:
            if model_def.ordered and k > 1:
                start["mu_first"] = first
                start["mu_rest"] = mu[:, 1:]
            else:
                start["mu"] = mu
            structure = model_def.covariance_type
            if structure == "full":
                start |= {f"chol_cov_{j}": _packed_cholesky(cov[j]) for j in range(k)}
            elif structure == "tied":
                start["chol_cov"] = _packed_cholesky(cov.mean(axis=0))
            elif structure == "diag":
                start["scale"] = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
            else:
                start["scale"] = np.sqrt(np.trace(cov, axis1=1, axis2=2) / dim)
        starts.append(start)
    return starts


def initial_point(model, initvals: Mapping | None = None, *, transformed: bool = True) -> dict[str, np.ndarray]:
    """The point a sampler starts from without jitter: the model's defaults overridden by ``initvals``.

    Keys are the value variables (transformed names, e.g. ``mu_ordered__``) unless ``transformed=False``.
    Evaluate ``model.compile_logp()`` on it to check a start is finite before sampling.
    """
    from pymc.initial_point import make_initial_point_fn

    fn = make_initial_point_fn(
        model=model, overrides=dict(initvals) if initvals else None, jitter_rvs=set(), return_transformed=transformed
    )
    return fn(0)


def posterior_draws(tree, names: Sequence[str] = ("w", "mu", "sigma", "cov")) -> dict[str, np.ndarray]:
    """Draws of ``names`` found in ``tree["posterior"]``, chains stacked: name -> (S, K, ...)."""
    posterior = tree["posterior"]
    draws = {}
    for name in names:
        if name in posterior.data_vars:
            da = posterior[name]
            da = da.transpose("chain", "draw", ...)
            draws[name] = da.values.reshape(-1, *da.shape[2:])
    return draws


def _log_component_density(x: np.ndarray, draws: Mapping[str, np.ndarray]) -> np.ndarray:
    """log Normal(x_i | mu_k, Sigma_k) per draw, shape (S, N, K)."""
    mu = np.asarray(draws["mu"], dtype=float)
    if "sigma" in draws:  # 1-D
        sigma = np.asarray(draws["sigma"], dtype=float)[:, None, :]
        z = (x[None, :, :1] - mu.reshape(mu.shape[0], 1, -1)) / sigma
        return -0.5 * z**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    cov = np.asarray(draws["cov"], dtype=float)
    s, k, dim = mu.shape
    chol = np.linalg.cholesky(cov)  # (S, K, D, D)
    diff = x[None, None, :, :] - mu[:, :, None, :]  # (S, K, N, D)
    # L^{-1} (x - mu) for every point at once: solve L Z = diff^T.
    z = np.linalg.solve(chol, np.swapaxes(diff, -1, -2))  # (S, K, D, N)
    log_det = np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)  # (S, K)
    out = -0.5 * (z**2).sum(axis=-2) - log_det[..., None] - 0.5 * dim * np.log(2 * np.pi)  # (S, K, N)
    return np.swapaxes(out, -1, -2)


def membership_probabilities(
    model_def: GaussianMixtureModel, x, posterior_draws: Mapping[str, np.ndarray], *, chunk: int = 256
) -> np.ndarray:
    """P(z_i = k | x, draw) for every draw, shape (S, N, K), computed in log space.

    ``posterior_draws`` maps ``w`` (S, K), ``mu`` (S, K) or (S, K, D), and ``sigma`` (S, K) for 1-D or
    ``cov`` (S, K, D, D) to their draws (see :func:`posterior_draws`). Draws are processed ``chunk`` at
    a time to bound memory.
    """
    x = as_data_matrix(x)
    w = np.asarray(posterior_draws["w"], dtype=float)
    if w.ndim != 2 or w.shape[1] != model_def.n_components:
        raise ValueError(f"w draws must be (S, {model_def.n_components}), got {w.shape}")
    out = np.empty((w.shape[0], x.shape[0], w.shape[1]))
    for start in range(0, w.shape[0], chunk):
        part = {name: np.asarray(value)[start : start + chunk] for name, value in posterior_draws.items()}
        with np.errstate(divide="ignore"):
            log_w = np.log(part["w"])
        log_joint = log_w[:, None, :] + _log_component_density(x, part)
        out[start : start + chunk] = np.exp(log_joint - logsumexp(log_joint, axis=-1, keepdims=True))
    return out


def membership_summary(model_def: GaussianMixtureModel, x, posterior_draws: Mapping[str, np.ndarray]) -> np.ndarray:
    """Posterior membership probabilities averaged over draws, shape (N, K).

    Meaningful per component only for the identified model (or relabelled draws): in the symmetric
    model label switching averages the components together.
    """
    return membership_probabilities(model_def, x, posterior_draws).mean(axis=0)
