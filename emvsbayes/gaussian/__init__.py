"""The Gaussian mixture family: one model definition, EM steps, initialisation, k-means, and a
scikit-learn-style estimator."""

import importlib

#: public name -> the module defining it; imported on first access (PEP 562), so that reading the family
#: object (emvsbayes.gaussian.family: spec checks, data loading) imports neither SciPy nor the EM code.
_LAZY = {
    **dict.fromkeys(("E_STEPS", "Frame", "GaussianData", "GaussianStats", "e_step", "fit", "fit_restarts",
                     "hard_e_step", "m_step", "params_from_resp", "prepare", "score_samples"), "emvsbayes.gaussian.em"),
    "GaussianMixture": "emvsbayes.gaussian.estimator",
    **dict.fromkeys(("INIT_METHODS", "initial_params", "initial_params_restarts"), "emvsbayes.gaussian.init"),
    **dict.fromkeys(("KMeansResult", "kmeans", "kmeans_plusplus"), "emvsbayes.gaussian.kmeans"),
    **dict.fromkeys(("COVARIANCE_TYPES", "GaussianMixtureModel", "GaussianParams", "GaussianPriors", "n_free_parameters",
                     "parameter_dims"), "emvsbayes.gaussian.model"),
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'emvsbayes.gaussian' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})


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
