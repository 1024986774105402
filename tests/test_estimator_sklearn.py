"""``emvsbayes.gaussian.GaussianMixture`` as a scikit-learn estimator.

Oracles: scikit-learn's own estimator test suite (``check_estimator``, through ``parametrize_with_checks``),
and scikit-learn's ``GaussianMixture`` run from the same starting parameters in the same ``Pipeline`` and
``GridSearchCV``. From one start both are one deterministic EM path with the same stopping rule, so they
agree to rounding (tests/test_gaussian_em.py checks the path itself). And the estimator without
scikit-learn, in a subprocess where ``import sklearn`` fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd  # an xarray dependency, always installed
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from emvsbayes.data import load_dataset
from emvsbayes.gaussian import GaussianMixture

#: The checks scikit-learn's suite runs that this estimator fails on purpose, each with the reason.
EXPECTED_FAILED_CHECKS = {
    "check_fit1d": "a 1-D array is accepted as N points of one feature (the lesson's one-variable data), "
                   "where scikit-learn refuses it; a fitted estimator still refuses a 1-D array that "
                   "could be one point (check_fit2d_predict1d passes)",
}


@parametrize_with_checks(
    # Three components: check_clustering fits three blobs and needs the three found (ARI > 0.4).
    [GaussianMixture(n_components=3, random_state=0)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
def test_passes_sklearn_estimator_checks(estimator, check):
    from sklearn.utils import get_tags

    if getattr(check, "func", check).__name__ == "check_array_api_input":
        # Not applicable: the numerics are numpy only, and the estimator says so (scikit-learn itself
        # runs this check only for estimators that claim array API support, with SCIPY_ARRAY_API=1).
        assert get_tags(estimator).array_api_support is False
        return
    check(estimator)


def test_is_a_clusterer_and_density_estimator():
    from sklearn.base import is_clusterer
    from sklearn.utils import get_tags

    estimator = GaussianMixture(2)
    assert is_clusterer(estimator)
    assert get_tags(estimator).estimator_type == "clusterer"
    assert hasattr(estimator, "score_samples") and hasattr(estimator, "fit_predict")


def faithful() -> np.ndarray:
    return np.asarray(load_dataset("old_faithful").x, dtype=float)


def start_of(k: int, x: np.ndarray) -> dict:
    """The k-means start of our estimator on ``x``, as the three ``*_init`` arguments both estimators take
    (``max_iter=0`` stops at the start)."""
    at_start = GaussianMixture(k, max_iter=0, random_state=0).fit(x)
    return dict(weights_init=at_start.weights_, means_init=at_start.means_, precisions_init=at_start.precisions_)


def test_pipeline_standard_scaler_then_mixture_matches_sklearns():
    # The lesson's StandardScaler-then-GaussianMixture; before the estimator had scikit-learn's base
    # class this failed with "'GaussianMixture' object has no attribute '__sklearn_tags__'".
    x = faithful()
    scaled = StandardScaler().fit_transform(x)
    options = dict(tol=1e-6, **start_of(2, scaled))
    ours = make_pipeline(StandardScaler(), GaussianMixture(2, **options)).fit(x)
    theirs = make_pipeline(StandardScaler(), SklearnGaussianMixture(2, **options)).fit(x)

    np.testing.assert_array_equal(ours.predict(x), theirs.predict(x))
    np.testing.assert_array_equal(ours.fit_predict(x), theirs.predict(x))
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x), atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(x), theirs.score_samples(x), rtol=1e-9)
    assert ours.score(x) == pytest.approx(theirs.score(x), rel=1e-10)
    np.testing.assert_allclose(ours[-1].means_, theirs[-1].means_, rtol=1e-8, atol=1e-10)
    assert ours[-1].n_iter_ == theirs[-1].n_iter_
    # Two clear groups of eruptions: both components hold a good share of the points.
    assert min(np.bincount(ours.predict(x))) > 80


def test_pipeline_keeps_a_dataframes_column_names():
    frame = pd.DataFrame(faithful(), columns=["eruptions", "waiting"])
    pipeline = make_pipeline(StandardScaler(), GaussianMixture(2, random_state=0)).fit(frame)
    assert list(pipeline[0].feature_names_in_) == ["eruptions", "waiting"]
    from_array = make_pipeline(StandardScaler(), GaussianMixture(2, random_state=0)).fit(frame.to_numpy())
    np.testing.assert_array_equal(pipeline.predict(frame), from_array.predict(frame.to_numpy()))


def test_grid_search_over_components_matches_sklearns_grid():
    # The same grid for both estimators, each K from the same start (computed once on all the data; every
    # fold starts there): the cross-validated mean log-likelihoods agree to rounding and pick the same K.
    # max_iter = 20 keeps it fast (K = 3 is still moving then; both stop at the same step regardless).
    x = StandardScaler().fit_transform(faithful())
    grid = [{"n_components": [k], **{name: [value] for name, value in start_of(k, x).items()}} for k in (1, 2, 3)]
    folds = KFold(3, shuffle=True, random_state=0)
    ours = GridSearchCV(GaussianMixture(max_iter=20), grid, cv=folds).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = GridSearchCV(SklearnGaussianMixture(max_iter=20), grid, cv=folds).fit(x)

    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"], rtol=1e-8)
    for split in range(3):
        np.testing.assert_allclose(ours.cv_results_[f"split{split}_test_score"],
                                   theirs.cv_results_[f"split{split}_test_score"], rtol=1e-8)
    assert ours.best_params_["n_components"] == theirs.best_params_["n_components"] > 1
    # The default score is the mean held-out log-likelihood, as a manual loop over the folds computes it.
    best = ours.best_params_
    manual = np.mean([clone(GaussianMixture(max_iter=20)).set_params(**best).fit(x[train]).score(x[test])
                      for train, test in folds.split(x)])
    assert ours.best_score_ == pytest.approx(manual, rel=1e-12)


def test_grid_search_with_kmeans_starts_equals_a_manual_loop():
    x = StandardScaler().fit_transform(faithful())
    folds = KFold(3, shuffle=True, random_state=1)
    search = GridSearchCV(GaussianMixture(random_state=0), {"n_components": [1, 2, 3]}, cv=folds).fit(x)
    for k, score in zip((1, 2, 3), search.cv_results_["mean_test_score"], strict=True):
        manual = [GaussianMixture(k, random_state=0).fit(x[train]).score(x[test]) for train, test in folds.split(x)]
        assert score == pytest.approx(np.mean(manual), rel=1e-12)
    assert search.best_estimator_.n_components == search.best_params_["n_components"]


def test_clone_and_params_round_trip():
    estimator = GaussianMixture(3, covariance_type="diag", random_state=5)
    copy = clone(estimator)
    assert copy is not estimator and copy.get_params() == estimator.get_params()
    assert copy.set_params(n_components=2) is copy and copy.n_components == 2
    with pytest.raises(ValueError, match="Invalid parameter 'k'"):
        estimator.set_params(k=2)
    assert repr(estimator) == "GaussianMixture(covariance_type='diag', n_components=3, random_state=5)"


def test_a_1d_array_is_refused_when_fitted_on_more_than_one_feature():
    x = faithful()
    fitted = GaussianMixture(2, random_state=0).fit(x)
    with pytest.raises(ValueError, match=r"fitted on 2 features; Reshape your data with X.reshape\(1, -1\)"):
        fitted.predict(x[0])
    # Fitted on one feature, a 1-D array is N points of it, as in fit.
    one = GaussianMixture(2, random_state=0).fit(x[:, 0])
    np.testing.assert_array_equal(one.predict(x[:, 0]), one.predict(x[:, :1]))


# ------------------------------------------------------------------------------------------------
# Without scikit-learn

_WITHOUT_SKLEARN = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NoSklearn(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "sklearn" or name.startswith("sklearn."):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
            return None

    sys.meta_path.insert(0, NoSklearn())
    import numpy as np
    from emvsbayes.gaussian import GaussianMixture
    from emvsbayes.data import load_dataset

    x = np.asarray(load_dataset("old_faithful").x, dtype=float)
    gm = GaussianMixture(2, random_state=0)
    out = {"repr": repr(gm), "params": sorted(gm.get_params()), "fitted_before": hasattr(gm, "params_")}
    gm.set_params(tol=1e-6).fit(x)
    out.update(means=gm.means_.tolist(), score=gm.score(x), labels=gm.predict(x).tolist(),
               labels_=gm.labels_.tolist(), n_features_in_=gm.n_features_in_,
               sklearn_loaded=any(name.split(".")[0] == "sklearn" for name in sys.modules))
    errors = {}
    for name, call in {"wrong_width": lambda: gm.predict(np.zeros((3, 3))),
                       "one_point_1d": lambda: gm.predict(x[0]),
                       "nan": lambda: GaussianMixture(2).fit(np.array([1.0, np.nan, 2.0])),
                       "bad_param": lambda: gm.set_params(k=1),
                       "unfitted": lambda: GaussianMixture(2).predict(x)}.items():
        try:
            call()
        except (ValueError, AttributeError) as error:
            errors[name] = [type(error).__name__, str(error)]
    out["errors"] = errors
    print(json.dumps(out))
    """
)


def test_estimator_imports_and_fits_without_sklearn():
    done = subprocess.run([sys.executable, "-c", _WITHOUT_SKLEARN], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert not out["sklearn_loaded"] and not out["fitted_before"]
    assert out["repr"] == "GaussianMixture(n_components=2, random_state=0)"
    assert "n_components" in out["params"] and len(out["params"]) == 11

    # The same fit and the same answers as with scikit-learn's base class (it only validates and names).
    x = faithful()
    with_sklearn = GaussianMixture(2, random_state=0, tol=1e-6).fit(x)
    np.testing.assert_array_equal(out["means"], with_sklearn.means_)
    assert out["score"] == with_sklearn.score(x)
    assert out["labels"] == out["labels_"] == with_sklearn.predict(x).tolist()
    assert out["n_features_in_"] == 2

    errors = out["errors"]
    assert errors["wrong_width"] == ["ValueError", "X has 3 features, but GaussianMixture is expecting 2 features as input."]
    assert errors["one_point_1d"][0] == "ValueError" and "Reshape your data" in errors["one_point_1d"][1]
    assert errors["nan"] == ["ValueError", "X must be finite: it contains NaN or infinity"]
    assert errors["bad_param"][0] == "ValueError" and "'k'" in errors["bad_param"][1]
    assert errors["unfitted"][0] == "AttributeError" and "not fitted yet" in errors["unfitted"][1]
    # The messages a user sees are the same with scikit-learn for the width and for NaN.
    with pytest.raises(ValueError) as wrong_width:
        with_sklearn.predict(np.zeros((3, 3)))
    assert str(wrong_width.value) == errors["wrong_width"][1]


# ------------------------------------------------------------------------------------------------
# From an EM fit to the posterior


def test_sample_posterior_starts_at_the_fit_and_keeps_its_labelling():
    # Two well-separated groups (means -3 and 3, sd 1, 100 points), so the posterior is one mode near the
    # EM answer. EM lists the larger group at +3 first: the relabelled posterior must name the components
    # as EM does. Tolerance: by Bernstein-von Mises the posterior mean is within O(1/N) of the maximum
    # likelihood, far inside 3 posterior sds; the Monte Carlo error of a mean with ESS >= 100 is at most
    # sd / 10. The draws are fixed by the seed, so the test is deterministic.
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-3, 1, 40), rng.normal(3, 1, 60)])
    fitted = GaussianMixture(2, random_state=0).fit(x)
    assert fitted.means_[0, 0] > 0 > fitted.means_[1, 0]
    tree = fitted.sample_posterior(x, draws=200, tune=200, chains=2, random_state=1)

    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data", "posterior_relabelled",
                  "label_switching", "posterior_membership", "em"):
        assert group in tree.children, group
    posterior = tree["posterior_relabelled"].to_dataset()
    assert posterior.sizes["chain"] == 2 and posterior.sizes["draw"] == 200
    np.testing.assert_array_equal(tree["observed_data"]["x"].values.ravel(), x)
    np.testing.assert_array_equal(tree["em"]["mu"].values, fitted.means_.ravel())
    np.testing.assert_array_equal(tree["em"]["w"].values, fitted.weights_)
    for name, em_value in (("mu", fitted.means_.ravel()), ("w", fitted.weights_),
                           ("sigma", np.sqrt(fitted.covariances_.ravel()))):
        mean = posterior[name].mean(("chain", "draw")).values
        sd = posterior[name].std(("chain", "draw")).values
        assert np.all(np.abs(mean - em_value) < 3 * sd), (name, mean, em_value, sd)
    # Membership agrees with EM's hard allocation on nearly every point (the groups barely overlap).
    membership = tree["posterior_membership"]["membership_relabelled"].values
    assert np.mean(np.argmax(membership, axis=1) == fitted.predict(x)) > 0.97


def test_sample_posterior_refuses_bad_arguments_before_sampling():
    from sklearn.exceptions import NotFittedError

    x = faithful()
    with pytest.raises(NotFittedError):
        GaussianMixture(2).sample_posterior(x, draws=10)
    fitted = GaussianMixture(2, random_state=0).fit(x)
    with pytest.raises(ValueError, match="draws must be a whole number >= 1, got 0"):
        fitted.sample_posterior(x, draws=0)
    with pytest.raises(ValueError, match="X has 1 features, but GaussianMixture is expecting 2"):
        fitted.sample_posterior(x[:, :1], draws=10)
