"""Relabelling renames every label dim a parameter declares (issue 17): a K x K transition matrix's rows
AND columns, ``P[perm][:, perm]``, not its rows alone.

The oracle is a known scrambling: draws of a 3-state transition matrix (and weights) near a truth whose
rows are told apart by their diagonal and their sorted off-diagonal entries, each draw renamed by a
known permutation (all six in turn). A correct relabelling to the truth's labelling gives back the
unscrambled draws exactly (the noise, 0.01, is far below the gaps between rows, 0.1, so every draw's
best match is its own: no sampler luck is involved). Permuting the rows alone leaves the columns
scrambled and fails these tests, as does comparing rows entry by entry in scrambled column order.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from emvsbayes.labels import all_permutations, apply_permutations, distinct_optima, label_features, permute_labels, pivot
from emvsbayes.labels.groups import em_optima_group, label_switching_groups
from emvsbayes.labels.xarray import draws_from_dataset, relabel_tree

K = 3
TRUE_P = np.array([[0.80, 0.15, 0.05],
                   [0.10, 0.60, 0.30],
                   [0.20, 0.10, 0.70]])
TRUE_W = np.array([0.5, 0.3, 0.2])


def _scrambled(n_chains=2, n_draws=60, seed=0):
    """(noisy draws in the true labelling, the same draws scrambled, the scrambling perms), chain-major."""
    rng = np.random.default_rng(seed)
    S = n_chains * n_draws
    P = TRUE_P + 0.01 * rng.standard_normal((S, K, K))
    w = TRUE_W + 0.01 * rng.standard_normal((S, K))
    perms = all_permutations(K)[np.arange(S) % 6]
    rows = np.arange(S)[:, None]
    scrambled_P = P[rows, perms][rows, :, perms].transpose(0, 2, 1)
    # the same thing written out, draw by draw, as the oracle of the line above
    for s in range(S):
        np.testing.assert_array_equal(scrambled_P[s], P[s][perms[s]][:, perms[s]])
    return {"P": P, "w": w}, {"P": scrambled_P, "w": w[rows, perms]}, perms


def _posterior(draws, n_chains=2, attrs=True) -> xr.Dataset:
    S = draws["P"].shape[0]
    shape = (n_chains, S // n_chains)
    ds = xr.Dataset({
        "P": (("chain", "draw", "component", "component_to"), draws["P"].reshape(*shape, K, K)),
        "w": (("chain", "draw", "component"), draws["w"].reshape(*shape, K)),
    }, coords={"chain": np.arange(n_chains), "draw": np.arange(shape[1]), "component": np.arange(K)})
    if attrs:
        ds["P"].attrs["label_dims"] = "component component_to"
        ds["w"].attrs["label_dims"] = "component"
    return ds


def test_permute_labels_permutes_every_label_axis_as_the_loop_does():
    rng = np.random.default_rng(1)
    S, D = 7, 2
    values = rng.standard_normal((S, K, D, K))
    perms = all_permutations(K)[rng.integers(0, 6, S)]
    out = permute_labels(values, perms, axes=(1, 3))
    for s in range(S):
        np.testing.assert_array_equal(out[s], values[s][perms[s]][:, :, perms[s]])
    # one permutation, no draw axis
    perm = np.array([2, 0, 1])
    np.testing.assert_array_equal(permute_labels(TRUE_P, perm, axes=(0, 1)), TRUE_P[perm][:, perm])
    # a mixture's (S, K, ...) arrays: as before, axis 1 only
    mu = rng.standard_normal((S, K, D))
    np.testing.assert_array_equal(apply_permutations({"mu": mu}, perms)["mu"], mu[np.arange(S)[:, None], perms])
    with pytest.raises(ValueError, match="draw axis"):
        permute_labels(values, perms, axes=(0,))


def test_label_features_do_not_change_under_a_joint_renaming_but_for_the_row_order():
    perm = np.array([1, 2, 0])
    renamed = TRUE_P[perm][:, perm]
    features = label_features({"P": TRUE_P[None]}, {"P": (1, 2)})["P"][0]
    renamed_features = label_features({"P": renamed[None]}, {"P": (1, 2)})["P"][0]
    np.testing.assert_array_equal(renamed_features, features[perm])
    np.testing.assert_array_equal(features[:, 0], np.diag(TRUE_P))


@pytest.mark.parametrize("only_matrix", [False, True])
def test_pivot_with_label_axes_undoes_a_joint_scrambling(only_matrix):
    truth, scrambled, perms = _scrambled()
    names = ["P"] if only_matrix else ["P", "w"]
    draws = {name: scrambled[name] for name in names}
    reference = {"P": TRUE_P, "w": TRUE_W}
    result = pivot(draws, reference, label_axes={"P": (1, 2)})
    back = apply_permutations(draws, result.perms, {"P": (1, 2)})
    for name in names:
        np.testing.assert_array_equal(back[name], truth[name])


@pytest.mark.parametrize("route", ["attrs", "declared"])
def test_label_switching_groups_recover_a_scrambled_transition_matrix(route):
    truth, scrambled, perms = _scrambled()
    posterior = _posterior(scrambled, attrs=route == "attrs")
    declared = {"P": ("component", "component_to"), "w": ("component",)} if route == "declared" else None
    groups = label_switching_groups(posterior, probs=None, reference={"P": TRUE_P, "w": TRUE_W}, method="pivot",
                                    declared=declared)
    relabelled = groups["posterior_relabelled"]
    np.testing.assert_array_equal(relabelled["P"].values.reshape(-1, K, K), truth["P"])
    np.testing.assert_array_equal(relabelled["w"].values.reshape(-1, K), truth["w"])
    # the scrambling undone: the permutation found, composed with the scramble, is the identity
    found = relabelled["permutation"].values.reshape(-1, K)
    np.testing.assert_array_equal(np.take_along_axis(perms, found, axis=1), np.broadcast_to(np.arange(K), perms.shape))
    # both chains sit in one mode once every label dim is renamed (only label switching between them)
    assert groups["label_switching"].attrs["distinct_modes"] == 0
    assert groups["posterior_modes"].attrs["n_modes"] == 1
    # the mode's summary is of the unscrambled matrix (its chains aligned along both label dims)
    modes = groups["posterior_modes"]
    for i in range(K):
        for j in range(K):
            mean = modes["mean"].sel(mode=0, parameter=f"P[{i},{j}]").item()
            np.testing.assert_allclose(mean, truth["P"][:, i, j].mean(), rtol=1e-12)
    assert relabelled["P"].attrs.get("label_dims") == (posterior["P"].attrs.get("label_dims"))


def test_relabel_tree_leaves_a_variable_declared_without_label_dims_alone():
    _, scrambled, perms = _scrambled()
    posterior = _posterior(scrambled)
    posterior["shared"] = (("chain", "draw", "component"), posterior["w"].values.copy())
    posterior["shared"].attrs["label_dims"] = ""
    assert set(draws_from_dataset(posterior)) == {"P", "w"}
    out = relabel_tree(posterior, perms)
    np.testing.assert_array_equal(out["shared"].values, posterior["shared"].values)
    np.testing.assert_array_equal(out["w"].values.reshape(-1, K),
                                  scrambled["w"][np.arange(len(perms))[:, None], perms])


def test_distinct_optima_count_jointly_renamed_matrices_as_one_optimum():
    perm = np.array([2, 0, 1])
    other = np.array([[0.5, 0.25, 0.25], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8]])
    P = np.stack([TRUE_P, TRUE_P[perm][:, perm], other, other[perm][:, perm]])
    w = np.stack([TRUE_W, TRUE_W[perm], TRUE_W, TRUE_W[perm]])
    loglik = np.array([-10.0, -10.0, -12.0, -12.0])
    optima = distinct_optima({"P": P, "w": w}, loglik, label_axes={"P": (1, 2)})
    assert [o.count for o in optima] == [2, 2]
    restarts = xr.Dataset({"P": (("restart", "component", "component_to"), P), "w": (("restart", "component"), w),
                           "loglik": ("restart", loglik)}, coords={"restart": np.arange(4)})
    restarts["P"].attrs["label_dims"] = "component component_to"
    assert em_optima_group(restarts, ["P", "w"])["count"].values.tolist() == [2, 2]


def test_order_relabelling_orders_by_a_new_familys_parameter():
    """``method="order"`` ordered by ``mu`` or else ``theta`` and failed (KeyError) for any other family."""
    rng = np.random.default_rng(2)
    lam = np.array([1.0, 5.0, 9.0]) + 0.1 * rng.standard_normal((2, 30, K))
    perms = all_permutations(K)[np.arange(60) % 6].reshape(2, 30, K)
    scrambled = np.take_along_axis(lam, perms, axis=2)
    posterior = xr.Dataset({"lam": (("chain", "draw", "component"), scrambled),
                            "w": (("chain", "draw", "component"), np.take_along_axis(np.broadcast_to(TRUE_W, lam.shape), perms, axis=2))})
    relabelled = label_switching_groups(posterior, probs=None, reference={"lam": lam[0, 0], "w": TRUE_W},
                                        method="order")["posterior_relabelled"]
    np.testing.assert_array_equal(relabelled["lam"].values, lam)
    np.testing.assert_array_equal(relabelled["w"].values, np.broadcast_to(TRUE_W, lam.shape))
