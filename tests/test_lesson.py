"""The lesson page's pieces without a browser: the log-likelihood surface against the model's own
log-likelihood and EM's answer, the `[model] labels` key, and names reaching the report's tables."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from emvsbayes.coins import em
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.errors import UserError
from emvsbayes.report import render_report
from emvsbayes.report.lesson import loglik_surface, surface_grid
from emvsbayes.report.params import component_names, parameter_rows
from emvsbayes.results import build_tree
from emvsbayes.spec import validate

HEADS = np.array([5, 7, 8, 9, 4])  # the lesson's five experiments of ten tosses
TOSSES = np.full(5, 10)


def test_surface_is_the_models_observed_loglik_at_every_grid_point():
    grid = np.linspace(0.05, 0.95, 7)
    for w in ((0.5, 0.5), (0.3, 0.7)):
        model = CoinMixture(n_components=2, weights="equal" if w[0] == 0.5 else "estimated")
        surface = loglik_surface(HEADS, TOSSES, grid, w)
        oracle = np.array([[model.loglik(CoinParams(np.array([a, b]), np.array(w)), HEADS, TOSSES) for b in grid]
                           for a in grid])
        np.testing.assert_allclose(surface, oracle, rtol=1e-12)


def test_surface_is_mirror_symmetric_for_equal_weights_only():
    grid = surface_grid(81)
    equal = loglik_surface(HEADS, TOSSES, grid)
    np.testing.assert_allclose(equal, equal.T, rtol=1e-13)
    unequal = loglik_surface(HEADS, TOSSES, grid, (0.2, 0.8))
    assert np.max(np.abs(unequal - unequal.T)) > 0.1  # swapping the coins also swaps their weights


def test_grid_maximum_is_ems_answer_or_its_mirror():
    model = CoinMixture(n_components=2, weights="equal")
    fit = em.fit(model, HEADS, TOSSES, CoinParams(np.array([0.5, 0.9]), model.equal_weights), tol=1e-12)
    grid = surface_grid()
    surface = loglik_surface(HEADS, TOSSES, grid)
    i, j = np.unravel_index(np.argmax(surface), surface.shape)
    step = grid[1] - grid[0]
    found = np.array([grid[i], grid[j]])
    theta = fit.params.theta
    assert min(np.abs(found - theta).max(), np.abs(found - theta[::-1]).max()) <= step
    # and EM's answer is at least as high as every grid point (it is the maximum, the grid a sample)
    assert model.loglik(fit.params, HEADS, TOSSES) >= surface.max() - 1e-12


def _coin_spec(**model):
    return {"data": {"dataset": "coins_lecture"}, "model": {"family": "coins", "components": 2, **model}}


@pytest.mark.parametrize("labels, problem", [
    (["A"], "gives 1 names but [model] components is 2"),
    (["A", "B", "C"], "gives 3 names"),
    (["A", "A"], "appears twice"),
    (["A", ""], "non-empty strings"),
    (["A", "   "], "non-empty strings"),
    (["A", 2], "non-empty strings"),
    (["A", "a coin with a long name"], "at most 12 characters"),
    ("AB", "must be a list of names"),
])
def test_bad_labels_name_the_key_and_the_fix(labels, problem):
    with pytest.raises(UserError) as error:
        validate(_coin_spec(labels=labels))
    assert "[model] labels" in str(error.value) and problem in str(error.value)


def test_labels_only_for_coins_and_one_k():
    with pytest.raises(UserError, match=r"\[model\] labels applies to binomial \(coin\) mixtures only, not to "
                                        "Gaussian mixtures; remove it"):
        validate({"data": {"dataset": "faithful"}, "model": {"family": "gaussian", "labels": ["A", "B"]}})
    with pytest.raises(UserError, match=r"give one name per component"):
        validate(_coin_spec(components=[2, 3], labels=["A", "B"]))


def test_good_labels_and_the_default():
    assert validate(_coin_spec(labels=["A", "B"]))["model"]["labels"] == ["A", "B"]
    assert validate(_coin_spec())["model"]["labels"] == []


def _labelled_tree(labels):
    """A small coin results tree built from a real EM fit, with or without component names."""
    model = CoinMixture(n_components=2, weights="equal")
    kw = dict(tol=1e-10)
    soft = em.fit(model, HEADS, TOSSES, CoinParams(np.array([0.5, 0.9]), model.equal_weights), **kw)
    hard = em.fit(model, HEADS, TOSSES, CoinParams(np.array([0.5, 0.9]), model.equal_weights), kind="hard", **kw)
    sets = [f"experiment {i + 1}" for i in range(5)]
    data = xr.Dataset({"heads": ("set", HEADS), "tosses": ("set", TOSSES)}, coords={"set": sets})
    if labels:
        data.attrs["component_labels"] = json.dumps(labels)
    groups = {"data": data}
    for name, fit in (("em", soft), ("em_hard", hard)):
        groups[name] = xr.Dataset({"theta": ("component", fit.params.theta), "w": ("component", fit.params.w),
                                   "resp": (("set", "component"), fit.stats.resp), "loglik": fit.loglik,
                                   "converged": fit.converged, "n_iter": fit.n_iter},
                                  coords={"component": [0, 1], "set": sets},
                                  attrs={"observed_loglik": model.loglik(fit.params, HEADS, TOSSES)})
        trace = {"theta": (("iteration", "component"), np.stack([row.params.theta for row in fit.trace])),
                 "w": (("iteration", "component"), np.stack([row.params.w for row in fit.trace])),
                 "loglik": ("iteration", fit.loglik_path),
                 "resp": (("iteration", "set", "component"), np.stack([row.stats.resp for row in fit.trace])),
                 "expected_heads": (("iteration", "component"), np.stack([row.stats.heads for row in fit.trace])),
                 "expected_tails": (("iteration", "component"), np.stack([row.stats.tails for row in fit.trace]))}
        groups[f"{name}_trace"] = xr.Dataset(trace, coords={"component": [0, 1], "set": sets})
    spec = {"title": "lesson", "description": "<b>five</b> experiments", "model": {"family": "coins"}}
    return build_tree(groups, {"title": "lesson", "spec": spec})


def test_names_reach_rows_steps_and_the_side_by_side_table():
    tree = _labelled_tree(["A", "B"])
    assert component_names(tree, 2) == ["A", "B"]
    assert [row.label for row in parameter_rows(tree)] == ["theta[A]", "theta[B]", "w[A]", "w[B]"]
    page = render_report(tree)
    assert "P(coin A)" in page and "coin B made" in page and "coin 0" not in page and "theta[0]" not in page
    # the lesson's guess from theta = (0.5, 0.9), then hard EM before soft EM
    assert "A, A, B, B, A" in page
    assert page.index("Hard EM, step by step") < page.index("Soft EM, step by step")
    differs = page[page.index('data-differs="1"'):]
    assert differs[:differs.index("</tr>")].count("experiment 2") == 1
    assert page.count('data-differs="1"') == 1
    assert 'data-fig="loglik-surface"' in page
    assert "&lt;b&gt;five&lt;/b&gt; experiments" in page  # the description, escaped


def test_without_labels_components_keep_their_numbers():
    tree = _labelled_tree(None)
    assert component_names(tree, 2) == ["0", "1"]
    assert [row.label for row in parameter_rows(tree)][:2] == ["theta[0]", "theta[1]"]
