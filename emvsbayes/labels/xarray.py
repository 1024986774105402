"""The xarray edge of the label-switching functions.

The numerical core (:mod:`emvsbayes.labels.relabel`) works on arrays of shape (S, K, ...). Here the
posterior group of a results tree is stacked to that shape (``chain`` and ``draw`` in chain-major
order to S, ``component`` to K), and permutations are put back under the original names. A variable's
label dims (its ``label_dims`` attribute, or a family's declaration given as ``declared``) are all
permuted together: a K x K transition matrix's rows and columns.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import NamedTuple

import numpy as np
import xarray as xr

from emvsbayes.labels.relabel import permute_labels
from emvsbayes.results import label_dims_of

__all__ = ["RhatComparison", "constant_elements_quiet", "draws_from_dataset", "label_axes_of", "relabel_tree",
           "rename_components", "rhat_before_after"]

SAMPLE_DIMS = ("chain", "draw")


def _as_dataset(tree: xr.DataTree | xr.Dataset, group: str) -> xr.Dataset:
    if isinstance(tree, xr.Dataset):
        return tree
    if group not in tree.children:
        raise ValueError(f"the tree has no group {group!r}; groups: {sorted(tree.children)}")
    return tree[group].to_dataset()


def _component_vars(ds: xr.Dataset, component_dim: str, declared=None) -> list[str]:
    """The variables relabelling renames: those whose label dims (:func:`label_dims_of`) include
    ``component_dim``."""
    return [name for name, da in ds.data_vars.items()
            if component_dim in da.dims and component_dim in label_dims_of(da, declared, component_dim)]


def _stacked(da: xr.DataArray, component_dim: str) -> tuple[np.ndarray, tuple[str, ...]]:
    # Sample dims first (chain-major), then component, then whatever else the variable has.
    rest = tuple(d for d in da.dims if d not in (*SAMPLE_DIMS, component_dim))
    order = (*SAMPLE_DIMS, component_dim, *rest)
    missing = [d for d in SAMPLE_DIMS if d not in da.dims]
    if missing:
        raise ValueError(f"variable {da.name!r} lacks the sample dims {missing}")
    values = da.transpose(*order).values
    return values.reshape(-1, *values.shape[2:]), order


def _label_axes(da: xr.DataArray, order: tuple[str, ...], component_dim: str, declared=None) -> tuple[int, ...]:
    """Positions of the variable's label dims in the stacked (S, K, ...) layout of ``order``."""
    stacked = order[len(SAMPLE_DIMS) - 1:]  # the draw axis stands for both sample dims
    label_dims = label_dims_of(da, declared, component_dim)
    unknown = [d for d in label_dims if d not in da.dims]
    if unknown:
        raise ValueError(f"variable {da.name!r} declares label dims {unknown} it does not have (dims {da.dims})")
    return tuple(stacked.index(d) for d in label_dims)


def draws_from_dataset(
    tree: xr.DataTree | xr.Dataset, group: str = "posterior", component_dim: str = "component", declared=None
) -> dict[str, np.ndarray]:
    """Every labelled variable as an (S, K, ...) array, chains stacked chain-major.

    Parameters
    ----------
    tree : DataTree or Dataset
    group : str
        Group of ``tree`` to read (ignored for a Dataset).
    component_dim : str
    declared : mapping of str to tuple of str, optional
        Name -> label dims, as the family declares them; a variable not in it is labelled as its
        ``label_dims`` attribute says, or by ``component_dim`` (:func:`emvsbayes.results.label_dims_of`).

    Returns
    -------
    dict of str to ndarray
        Trailing dimensions in the variable's own order, after ``chain, draw, component``.
    """
    ds = _as_dataset(tree, group)
    return {name: _stacked(ds[name], component_dim)[0] for name in _component_vars(ds, component_dim, declared)}


def label_axes_of(
    tree: xr.DataTree | xr.Dataset, group: str = "posterior", component_dim: str = "component", declared=None
) -> dict[str, tuple[int, ...]]:
    """Name -> the label axes of each array :func:`draws_from_dataset` returns (``(1,)`` for a mixture's
    parameters, ``(1, 2)`` for a K x K matrix labelled on both dims), for
    :func:`emvsbayes.labels.relabel.apply_permutations`."""
    ds = _as_dataset(tree, group)
    out = {}
    for name in _component_vars(ds, component_dim, declared):
        da = ds[name]
        rest = tuple(d for d in da.dims if d not in (*SAMPLE_DIMS, component_dim))
        out[name] = _label_axes(da, (*SAMPLE_DIMS, component_dim, *rest), component_dim, declared)
    return out


def relabel_tree(
    tree: xr.DataTree | xr.Dataset,
    perms: np.ndarray,
    group: str = "posterior",
    component_dim: str = "component",
    declared=None,
) -> xr.Dataset:
    """Apply per-draw permutations to every labelled variable, along every label dim it has.

    Parameters
    ----------
    tree : DataTree or Dataset
        Holds ``group`` with sample dims ``chain`` and ``draw``.
    perms : ndarray of int, shape (n_chains * n_draws, K)
        In chain-major order (all draws of chain 0 first), as from the functions of
        :mod:`emvsbayes.labels.relabel` applied to :func:`draws_from_dataset`.
    group : str
    component_dim : str
    declared : mapping of str to tuple of str, optional
        Name -> label dims (see :func:`draws_from_dataset`).

    Returns
    -------
    Dataset
        Same variables, dims, coords and attrs; new component ``j`` (at coordinate ``j``) holds old
        component ``perms[s, j]``, along each label dim of a variable at once (a transition matrix's
        rows and columns). Variables without label dims are unchanged.
    """
    ds = _as_dataset(tree, group)
    out = ds.copy()
    for name in _component_vars(ds, component_dim, declared):
        da = ds[name]
        values, order = _stacked(da, component_dim)
        permuted = permute_labels(values, perms, _label_axes(da, order, component_dim, declared))
        shape = tuple(da.sizes[d] for d in order)
        new = xr.DataArray(permuted.reshape(shape), dims=order).transpose(*da.dims)
        out[name] = da.copy(data=new.values)
    return out


def rename_components(ds: xr.Dataset, perm, component_dim: str = "component", declared=None) -> xr.Dataset:
    """One renaming for the whole Dataset: new component ``j`` is old ``perm[j]`` along every label dim of
    every labelled variable; coordinates stay where they are (component ``j`` keeps coordinate ``j``)."""
    perm = np.asarray(perm)
    out = ds.copy()
    for name in _component_vars(ds, component_dim, declared):
        da = ds[name]
        axes = tuple(da.dims.index(d) for d in label_dims_of(da, declared, component_dim))
        out[name] = da.copy(data=permute_labels(da.values, perm, axes))
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
    stays a quiet NaN here: such an element has no R-hat, and NaN says so; likewise x/0 for chains that
    never moved (no variance within a chain, some between them: a prior far from the data, a stuck
    sampler) is an infinite R-hat, which the page marks as failed. The warning, once per element, only
    filled the terminal."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="invalid value encountered in scalar divide", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="divide by zero encountered in scalar divide", category=RuntimeWarning)
        yield
