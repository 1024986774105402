"""The Gaussian mixture family: one model definition, EM steps, initialisation, k-means, and a
scikit-learn-style estimator."""

from emvsbayes.gaussian.em import (
    E_STEPS,
    Frame,
    GaussianData,
    GaussianStats,
    e_step,
    fit,
    fit_restarts,
    hard_e_step,
    m_step,
    params_from_resp,
    prepare,
    score_samples,
)
from emvsbayes.gaussian.init import INIT_METHODS, initial_params, initial_params_restarts
from emvsbayes.gaussian.kmeans import KMeansResult, kmeans, kmeans_plusplus
from emvsbayes.gaussian.model import (
    COVARIANCE_TYPES,
    GaussianMixtureModel,
    GaussianParams,
    GaussianPriors,
    n_free_parameters,
    parameter_dims,
)

__all__ = [
    "COVARIANCE_TYPES",
    "E_STEPS",
    "INIT_METHODS",
    "Frame",
    "GaussianData",
    "GaussianMixture",
    "GaussianMixtureModel",
    "GaussianParams",
    "GaussianPriors",
    "GaussianStats",
    "KMeansResult",
    "e_step",
    "fit",
    "fit_restarts",
    "hard_e_step",
    "initial_params",
    "initial_params_restarts",
    "kmeans",
    "kmeans_plusplus",
    "m_step",
    "n_free_parameters",
    "parameter_dims",
    "params_from_resp",
    "prepare",
    "score_samples",
]


def __getattr__(name: str):
    # The scikit-learn-style estimator imports scikit-learn (about a second, with SciPy's stats): only
    # when it is asked for, not by every process that fits a Gaussian mixture (each study worker did).
    if name == "GaussianMixture":
        from emvsbayes.gaussian.estimator import GaussianMixture

        return GaussianMixture
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
