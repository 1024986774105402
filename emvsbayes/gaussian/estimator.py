"""``GaussianMixture``: scikit-learn's verbs and names over the functional core.

A lesson's ``from sklearn.mixture import GaussianMixture`` becomes
``from emvsbayes.gaussian import GaussianMixture`` and the rest of its code runs unchanged. The work is
done by :mod:`emvsbayes.gaussian.init` (starting points), :mod:`emvsbayes.gaussian.em` (steps) and
:func:`emvsbayes.em.fit_em` (the loop); this class only stores what they return.

It stops where scikit-learn stops. scikit-learn's iteration t takes an E-step at the current parameters
(giving the mean log-likelihood there, its "lower bound"), then an M-step, then compares that lower
bound with the previous one; so it stops one M-step after the rise fell below ``tol``, keeps that
M-step's parameters, and reports as ``lower_bound_`` the mean log-likelihood one M-step behind them.
:func:`~emvsbayes.em.fit_em` with ``lagged_test=True`` is that rule, so from the same starting
parameters ``n_iter_``, ``converged_``, ``lower_bound_``, ``lower_bounds_`` and the parameters are
scikit-learn's (to rounding); with ``n_init > 1`` the best run is chosen by ``lower_bound_`` as there.
The log-likelihood at the fitted parameters is ``score(X)`` (or ``fit_.loglik``, a total).

Differences from scikit-learn, all deliberate:

- Random starts draw from a ``numpy.random.Generator``, not a ``RandomState``: the same ``random_state``
  gives different k-means or random starts than scikit-learn (given ``weights_init``, ``means_init``
  and ``precisions_init`` the starts are the same).
- No ``ConvergenceWarning``: ``converged_`` says it, and ``restarts_`` keeps every run.
- 1-D arrays are accepted as N points of one feature (scikit-learn's ``check_fit1d`` expects a refusal;
  the one check it fails). A fitted estimator refuses a 1-D array only when it was fitted on more
  than one feature, where the array could be one point.

With scikit-learn installed the class is a scikit-learn estimator (``BaseEstimator``, ``ClusterMixin``,
``DensityMixin``): it clones, goes into a ``Pipeline`` and ``GridSearchCV`` (whose default score is
``score``, the mean log-likelihood), validates input with scikit-learn's own ``validate_data``, and passes
``check_estimator`` (tests/test_estimator_sklearn.py). scikit-learn is optional: without it the class
keeps the same parameters, verbs and error messages over a small base of its own.
"""

from __future__ import annotations

import inspect

import numpy as np

from emvsbayes.em import EMFit, EMIteration
from emvsbayes.gaussian import em
from emvsbayes.gaussian.init import initial_params_restarts
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams, GaussianPriors, as_data_matrix


try:  # scikit-learn is optional: the estimator is the same with or without it.
    from sklearn.base import BaseEstimator, ClusterMixin, DensityMixin
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:  # pragma: no cover - exercised by a subprocess test that hides scikit-learn
    BaseEstimator = ClusterMixin = DensityMixin = None


class _ParamsBase:
    """What the estimator needs of ``sklearn.base.BaseEstimator`` when scikit-learn is not installed:
    parameters read from ``__init__``'s signature, ``get_params``/``set_params`` and a repr of the
    parameters that differ from their defaults."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(name for name, p in signature.parameters.items()
                      if name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}; "
                                 f"valid parameters are: {valid}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{name}={value!r}" for name, value in self.get_params().items()
                   if not (value is defaults.get(name) or (np.isscalar(value) and value == defaults.get(name)))]
        return f"{type(self).__name__}({', '.join(changed)})"


_BASES = (ClusterMixin, DensityMixin, BaseEstimator) if BaseEstimator is not None else (_ParamsBase,)


def _lower_bounds(fit: EMFit, n_samples: int) -> list[float]:
    """``[-inf, lower bound at iteration 1, ..., at iteration n_iter]``: scikit-learn's lower bound at
    iteration t is the mean log-likelihood at the parameters after t - 1 M-steps."""
    return [-np.inf] + [row.loglik / n_samples for row in fit.trace[: fit.n_iter]]


class GaussianMixture(*_BASES):
    """Gaussian mixture fitted by EM, with scikit-learn's parameters and fitted attributes.

    Parameters
    ----------
    n_components, covariance_type, tol, reg_covar, max_iter, n_init, init_params, weights_init,
    means_init, precisions_init, random_state
        As in :class:`sklearn.mixture.GaussianMixture`. ``tol`` applies to the mean log-likelihood
        per point; ``random_state`` is ``None``, an int seed or a ``numpy.random.Generator``.

    Attributes
    ----------
    weights_ : (K,)
    means_ : (K, D)
    covariances_, precisions_, precisions_cholesky_ : shaped by ``covariance_type`` as in scikit-learn
    converged_ : bool
    n_iter_ : int
        M-steps taken by the best run.
    lower_bound_ : float
        As scikit-learn's: mean log-likelihood per point at the parameters one M-step before the fitted
        ones (the value the stopping rule last tested); ``-inf`` when ``max_iter = 0``.
    lower_bounds_ : list of float
        The best run's ``lower_bound_`` at each of its ``n_iter_`` iterations (its last element is
        ``lower_bound_``).
    labels_ : (N,) int
        The most responsible component of each training point (``fit_predict``'s answer).
    n_features_in_ : int
    feature_names_in_ : (D,) str
        Only when fitted on data with column names (a DataFrame), as in scikit-learn.
    params_ : GaussianParams
    restarts_ : tuple of EMFit
        Every restart's outcome, in order (the best with its whole trace, the others with their starting
        parameters and their objective at each iteration).
    trace_ : tuple of EMIteration
        The best run's per-iteration record (log-likelihoods are totals, not means).
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state

    # ----------------------------------------------------------------------------------------------
    @property
    def model_(self) -> GaussianMixtureModel:
        return GaussianMixtureModel(self.n_components, self.covariance_type, self.reg_covar)

    def fit(self, X, y=None) -> GaussianMixture:
        """Run EM ``n_init`` times and keep the run with the highest final log-likelihood."""
        # scikit-learn's checks, before any work: a bad argument is a ValueError naming it.
        if not (isinstance(self.n_components, (int, np.integer)) and self.n_components >= 1):
            raise ValueError(f"n_components must be a whole number >= 1, got {self.n_components!r}")
        if not self.reg_covar >= 0:
            raise ValueError(f"reg_covar must be >= 0, got {self.reg_covar!r}")
        x = self._validated(X, reset=True)
        model = self.model_
        rng = np.random.default_rng(self.random_state)
        inits = initial_params_restarts(
            model,
            x,
            self.n_init,
            self.init_params,
            rng,
            weights_init=self.weights_init,
            means_init=self.means_init,
            precisions_init=self.precisions_init,
        )
        # tol is per point in scikit-learn; the loop works with the total. No parameter criterion and
        # the lagged test, as in scikit-learn (see the module's docstring).
        restarts = em.fit_restarts(
            model, x, inits, tol=self.tol * x.shape[0], param_tol=np.inf, max_iter=self.max_iter,
            lagged_test=True,
        )
        lower_bounds = [_lower_bounds(fit, x.shape[0]) for fit in restarts.fits]
        if self.max_iter == 0:
            best = len(restarts.fits) - 1  # scikit-learn keeps the last start when it takes no step
        else:  # the first of the highest, as scikit-learn's strict ">" keeps it
            best = int(np.argmax([bounds[-1] for bounds in lower_bounds]))
        self._set_fit(restarts.fits[best], lower_bounds[best])
        self.restarts_ = restarts.fits
        return self

    def _set_fit(self, fit: EMFit, lower_bounds: list[float]) -> None:
        params: GaussianParams = fit.params
        self.fit_ = fit
        self.params_ = params
        self.weights_ = np.array(params.w)
        self.means_ = np.array(params.mu)
        self.covariances_ = params.covariances()
        self.precisions_ = params.precisions()
        self.precisions_cholesky_ = np.array(params.prec_chol)
        self.converged_ = fit.converged
        self.n_iter_ = fit.n_iter
        self.lower_bound_ = lower_bounds[-1]
        self.lower_bounds_ = lower_bounds[1:]
        # fit_.stats is the E-step at the returned parameters, so these are fit(X).predict(X).
        self.labels_ = np.asarray(fit.stats.labels)

    @property
    def trace_(self) -> tuple[EMIteration, ...]:
        return self.fit_.trace

    def fit_predict(self, X, y=None) -> np.ndarray:
        """Fit, then return the most responsible component of each point (N,)."""
        return self.fit(X).labels_

    # ----------------------------------------------------------------------------------------------
    def _validated(self, X, *, reset: bool) -> np.ndarray:
        """``X`` as a finite float (N, D) array; ``reset`` (fit) records its width (and column names),
        otherwise it must match the fitted width."""
        ndim = getattr(X, "ndim", None)
        if ndim is None:
            ndim = np.ndim(X)
        if ndim == 1:
            if not reset and getattr(self, "n_features_in_", 1) != 1:
                # Fitted on D > 1 features, a 1-D array might be one point: say so rather than guess.
                raise ValueError(
                    f"X is a 1-D array, read as {np.shape(X)[0]} points of one feature, but this "
                    f"GaussianMixture was fitted on {self.n_features_in_} features; Reshape your data "
                    "with X.reshape(1, -1) if it is one point, or give an (N, D) array")
            X = np.asarray(X).reshape(-1, 1)
        elif ndim != 2:
            raise ValueError(f"data must be (N,) or (N, D), got shape {np.shape(X)}")
        if BaseEstimator is None:
            x = as_data_matrix(X)
            if x.shape[0] < (2 if reset else 1):
                raise ValueError(f"Found array with {x.shape[0]} sample(s) (shape={x.shape}) while a "
                                 f"minimum of {2 if reset else 1} is required")
            if reset:
                self.n_features_in_ = x.shape[1]
            elif x.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {x.shape[1]} features, but GaussianMixture is expecting "
                                 f"{self.n_features_in_} features as input.")
        else:  # scikit-learn's checks (sparse, object and complex data, widths, column names)
            x = validate_data(self, X, reset=reset, dtype=np.float64, ensure_all_finite=False,
                              ensure_min_samples=2 if reset else 1)
        if not np.all(np.isfinite(x)):
            raise ValueError("X must be finite: it contains NaN or infinity")
        return x

    def _check_fitted(self) -> None:
        if BaseEstimator is not None:
            check_is_fitted(self, "params_")
        elif not hasattr(self, "params_"):
            raise AttributeError("this GaussianMixture is not fitted yet: call fit(X) first")

    def score_samples(self, X) -> np.ndarray:
        """log p(x_i) under the fitted mixture (N,)."""
        self._check_fitted()
        return em.score_samples(self.model_, self.params_, self._validated(X, reset=False))

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per point."""
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X) -> np.ndarray:
        """P(component k | x_i) (N, K)."""
        self._check_fitted()
        return np.exp(em.log_resp(self.model_, self.params_, self._validated(X, reset=False)))

    def predict(self, X) -> np.ndarray:
        """Most probable component of each point (N,)."""
        self._check_fitted()
        return np.argmax(em.log_joint(self.model_, self.params_, self._validated(X, reset=False)), axis=1)

    def _n_parameters(self) -> int:
        return self.model_.n_free_parameters(self.means_.shape[1])

    def bic(self, X) -> float:
        """-2 log L + p log N (scikit-learn's definition and parameter count); lower is better."""
        loglik = self.score_samples(X)
        n = loglik.shape[0]
        return -2.0 * float(np.sum(loglik)) + self._n_parameters() * np.log(n)

    def aic(self, X) -> float:
        """-2 log L + 2 p; lower is better."""
        loglik = self.score_samples(X)
        n = loglik.shape[0]
        return -2.0 * float(np.sum(loglik)) + 2.0 * self._n_parameters()

    def sample_posterior(
        self,
        X,
        *,
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        sampler: str = "auto",
        target_accept: float | str = "auto",
        relabel: str = "auto",
        priors: GaussianPriors | None = None,
        random_state=None,
        progressbar: bool = False,
    ):
        """The Bayesian posterior of this mixture on ``X``, started at the EM fit and put in its labelling.

        The bridge from a scikit-learn fit to the comparison: the same model (``n_components``,
        ``covariance_type``) with the priors of a spec's ``[bayes]`` table, sampled as
        ``emvsbayes run`` samples it (:func:`emvsbayes.sampling.sample_posterior`), each chain started
        at an EM optimum of this fit (the best first), then relabelled with the fitted parameters as the
        reference so the relabelled draws and ``means_``, ``weights_`` and ``covariances_`` name the
        same components. ``X`` is normally the data that was fitted.

        Parameters
        ----------
        X : (N, D) array-like
        draws, tune, chains, sampler, target_accept, relabel
            As the spec's ``[bayes]`` keys of the same names.
        priors : GaussianPriors, optional
            The priors (default: the spec's defaults, scaled by the data).
        random_state : None, int or numpy.random.Generator
            The sampler's seed; ``None`` takes this estimator's ``random_state`` (and fresh entropy if
            that is ``None`` too).
        progressbar : bool

        Returns
        -------
        xarray.DataTree
            Groups ``posterior``, ``sample_stats``, ``log_likelihood``, ``observed_data`` (as the
            sampler returns them), ``posterior_relabelled`` and ``label_switching`` (as in
            ``results.nc``), ``posterior_membership`` (mean membership probabilities, before and after
            relabelling) and ``em`` (this fit's parameters, in the posterior's dimension names).
        """
        # Imported here: PyMC and JAX are heavy, and the EM estimator does not need them.
        import xarray as xr

        from emvsbayes.em import EMRestarts
        from emvsbayes.gaussian import bayes
        from emvsbayes.comparison import start_points
        from emvsbayes.labels.groups import label_switching_groups
        from emvsbayes.sampling import ModelRecipe, SamplerSettings, resolve_sampler, resolve_target_accept
        from emvsbayes.sampling import sample_posterior as run_sampler

        self._check_fitted()
        x = self._validated(X, reset=False)
        for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        model_def = GaussianMixtureModel(self.n_components, self.covariance_type, self.reg_covar,
                                         priors=priors if priors is not None else GaussianPriors())
        seed = random_state if random_state is not None else self.random_state
        if not isinstance(seed, (int, np.integer)):  # a Generator, or None for fresh entropy
            seed = int(np.random.default_rng(seed).integers(2**31 - 1))
        columns = [str(c) for c in getattr(self, "feature_names_in_", range(x.shape[1]))]
        settings = SamplerSettings(
            sampler=resolve_sampler(sampler), chains=chains, draws=draws, tune=tune,
            target_accept=resolve_target_accept(target_accept, float(np.min(self.weights_)) * x.shape[0]))
        starts = start_points(GaussianParams.variables, EMRestarts(tuple(self.restarts_)))
        outcome = run_sampler(ModelRecipe(bayes.build_model, (model_def, x), {"columns": columns}), settings,
                              int(seed), bayes.initvals_from_params(model_def, starts), progressbar=progressbar)
        tree = outcome.tree
        groups = {name: tree[name].to_dataset() for name in ("posterior", "sample_stats", "log_likelihood",
                                                             "observed_data") if name in tree.children}
        groups["posterior"].attrs.update(sampler=outcome.sampler, n_start_optima=len(starts),
                                         target_accept=settings.target_accept)
        probs = bayes.membership_probabilities(model_def, x, bayes.posterior_draws(tree))
        reference = self.params_.variables()
        groups.update(label_switching_groups(
            groups["posterior"][[name for name in reference if name in groups["posterior"]]], probs=probs, reference=reference,
            reference_allocation=np.argmax(em.log_resp(model_def, self.params_, x), axis=1), method=relabel,
            order_var="mu"))
        perms = groups["posterior_relabelled"]["permutation"].values.reshape(-1, self.n_components)
        component = groups["posterior"]["component"].values
        groups["posterior_membership"] = xr.Dataset(
            {"membership": (("obs", "component"), probs.mean(axis=0)),
             "membership_relabelled": (("obs", "component"),
                                       np.take_along_axis(probs, perms[:, None, :], axis=2).mean(axis=0))},
            coords={"obs": np.arange(x.shape[0]), "component": component})
        posterior = groups["posterior"]
        groups["em"] = xr.Dataset(
            {name: (posterior[name].dims[2:], np.asarray(value)) for name, value in reference.items()
             if name in posterior},
            coords={dim: posterior[dim].values for name in reference if name in posterior
                    for dim in posterior[name].dims[2:]})
        groups["em"].attrs.update(n_iter=self.n_iter_, converged=int(self.converged_),
                                  lower_bound=float(self.lower_bound_))
        return xr.DataTree.from_dict(groups)

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` points; returns (X (n, D), component labels (n,)), grouped by component
        as scikit-learn does. Draws from ``random_state``."""
        self._check_fitted()
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        rng = np.random.default_rng(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        cov = self.params_.full_covariances()
        x = np.vstack(
            [rng.multivariate_normal(self.means_[k], cov[k], size=int(c)) for k, c in enumerate(counts)]
        )
        labels = np.repeat(np.arange(self.n_components), counts)
        return x, labels
