"""The xarray edge of the label-switching functions.

The numerical core (:mod:`emvsbayes.labels.relabel`) works on arrays of shape (S, K, ...). Here the
posterior group of a results tree is stacked to that shape (``chain`` and ``draw`` in chain-major
order to S, ``component`` to K), and permutations are put back under the original names.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import NamedTuple

import numpy as np
import xarray as xr

from emvsbayes.labels.relabel import apply_permutations

__all__ = ["RhatComparison", "constant_elements_quiet", "draws_from_dataset", "relabel_tree", "rhat_before_after"]

SAMPLE_DIMS = ("chain", "draw")


def _as_dataset(tree: xr.DataTree | xr.Dataset, group: str) -> xr.Dataset:
    if isinstance(tree, xr.Dataset):
        return tree
    if group not in tree.children:
        raise ValueError(f"the tree has no group {group!r}; groups: {sorted(tree.children)}")
    return tree[group].to_dataset()


def _component_vars(ds: xr.Dataset, component_dim: str) -> list[str]:
    return [name for name, da in ds.data_vars.items() if component_dim in da.dims]


def _stacked(da: xr.DataArray, component_dim: str) -> tuple[np.ndarray, tuple[str, ...]]:
    # Sample dims first (chain-major), then component, then whatever else the variable has.
    rest = tuple(d for d in da.dims if d not in (*SAMPLE_DIMS, component_dim))
    order = (*SAMPLE_DIMS, component_dim, *rest)
    missing = [d for d in SAMPLE_DIMS if d not in da.dims]
    if missing:
        raise ValueError(f"variable {da.name!r} lacks the sample dims {missing}")
    values = da.transpose(*order).values
    return values.reshape(-1, *values.shape[2:]), order


def draws_from_dataset(
    tree: xr.DataTree | xr.Dataset, group: str = "posterior", component_dim: str = "component"
) -> dict[str, np.ndarray]:
    """Every variable with a component dimension as an (S, K, ...) array, chains stacked chain-major.

    Parameters
    ----------
    tree : DataTree or Dataset
    group : str
        Group of ``tree`` to read (ignored for a Dataset).
    component_dim : str

    Returns
    -------
    dict of str to ndarray
        Trailing dimensions in the variable's own order, after ``chain, draw, component``.
    """
    ds = _as_dataset(tree, group)
    return {name: _stacked(ds[name], component_dim)[0] for name in _component_vars(ds, component_dim)}


def relabel_tree(
    tree: xr.DataTree | xr.Dataset,
    perms: np.ndarray,
    group: str = "posterior",
    component_dim: str = "component",
) -> xr.Dataset:
    """Apply per-draw permutations to every variable with a ``component`` dimension.

    Parameters
    ----------
    tree : DataTree or Dataset
        Holds ``group`` with sample dims ``chain`` and ``draw``.
    perms : ndarray of int, shape (n_chains * n_draws, K)
        In chain-major order (all draws of chain 0 first), as from the functions of
        :mod:`emvsbayes.labels.relabel` applied to :func:`draws_from_dataset`.
    group : str
    component_dim : str

    Returns
    -------
    Dataset
        Same variables, dims, coords and attrs; new component ``j`` (at coordinate ``j``) holds old
        component ``perms[s, j]``. Variables without the component dim are unchanged.
    """
    ds = _as_dataset(tree, group)
    out = ds.copy()
    for name in _component_vars(ds, component_dim):
        da = ds[name]
        values, order = _stacked(da, component_dim)
        # Every label dim the variable declares (attr label_dims: a transition matrix's rows and columns) is
        # permuted; without the attr, the component dim alone.
        label_dims = str(da.attrs.get("label_dims", component_dim)).split() or [component_dim]
        axes = tuple(order[len(SAMPLE_DIMS):].index(dim) for dim in label_dims if dim in order)
        permuted = apply_permutations({name: values}, perms, label_axes={name: axes})[name]
        shape = tuple(da.sizes[d] for d in order)
        new = xr.DataArray(permuted.reshape(shape), dims=order).transpose(*da.dims)
        out[name] = da.copy(data=new.values)
    return out


class RhatComparison(NamedTuple):
    """Convergence diagnostics before and after relabelling (ArviZ rank-normalised split R-hat, bulk ESS).

    Each field is a Dataset with the variables of the posterior and their non-sample dims.
    """

    rhat_before: xr.Dataset
    rhat_after: xr.Dataset
    ess_before: xr.Dataset
    ess_after: xr.Dataset


def rhat_before_after(posterior_ds: xr.Dataset, relabelled_ds: xr.Dataset, var_names=None) -> RhatComparison:
    """R-hat and ESS of the posterior as sampled and after relabelling.

    Label switching between or within chains inflates R-hat and deflates ESS of component
    parameters; after a good relabelling both should look like those of a converged run.

    Parameters
    ----------
    posterior_ds, relabelled_ds : Dataset
        With sample dims ``chain`` and ``draw``.
    var_names : list of str, optional
        Restrict to these variables.

    Returns
    -------
    RhatComparison
    """
    import arviz_stats as az  # ArviZ's rhat and ess; imported here, and without arviz-plots (matplotlib)

    kw = {"sample_dims": list(SAMPLE_DIMS), "var_names": var_names}
    with constant_elements_quiet():
        return RhatComparison(
            az.rhat(posterior_ds, **kw),
            az.rhat(relabelled_ds, **kw),
            az.ess(posterior_ds, **kw),
            az.ess(relabelled_ds, **kw),
        )


@contextlib.contextmanager
def constant_elements_quiet():
    """ArviZ's 0/0 for a constant element (the zeros off a spherical or diagonal covariance's diagonal)
    stays a quiet NaN here: such an element has no R-hat, and NaN says so; the warning, once per
    element, only filled the terminal."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="invalid value encountered in scalar divide", category=RuntimeWarning)
        yield
