"""Every scalar parameter of the results, one row each, with EM's point, Wald and bootstrap intervals and
the posterior's summaries side by side.

The comparison table, the forest plot and the summary card's agreement verdict all read these rows,
so they cannot disagree. Posterior summaries come from ``posterior_relabelled`` when the run wrote it
(per-component summaries of a label-switched posterior average over labellings and mean nothing), and
only from the chains of the main mode when the chains sit in several (``posterior_modes``): an interval
spanning two modes describes neither; the other modes have their own table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import xarray as xr

from emvsbayes.report.markup import group
from emvsbayes.results import ELEMENT_LABEL_ATTR, LABEL_DIMS_ATTR, label_dims_of, root_json

#: The parameters of results files written before the family's declaration was (root attribute
#: ``parameters``, variable attribute ``label_dims``): the only names such a file holds. Newer files
#: are read by their declaration, so a parameter a new family declares reaches every table.
LEGACY_PARAMETERS = ("theta", "w", "mu", "sigma", "cov")
SAMPLE_DIMS = ("chain", "draw")
NAN2 = (float("nan"), float("nan"))


@dataclass(frozen=True, slots=True)
class ParamRow:
    label: str
    name: str
    em: float
    fixed: bool = False
    se: float = float("nan")
    wald: tuple[float, float] = NAN2
    bootstrap: tuple[float, float] = NAN2
    post_mean: float = float("nan")
    post_sd: float = float("nan")
    post_eti: tuple[float, float] = NAN2
    post_hdi: tuple[float, float] = NAN2
    exact_mean: float = float("nan")
    exact_sd: float = float("nan")

    @property
    def em_in_posterior(self) -> bool | None:
        """Is EM's estimate inside the posterior's equal-tailed interval (None: no posterior)."""
        lo, hi = self.post_eti
        return None if not np.isfinite(lo) else bool(lo <= self.em <= hi)


def readable_label(tree: xr.DataTree, label: str) -> str:
    """A flat parameter label as stored (``mu[2,3]``, ``theta[0]``) the way the rest of the page writes it:
    each index by its coordinate's value (``mu[2, 最大攻速]``) and a component by the name the spec gave
    (``theta[A]``). A label that does not fit the posterior's variable is returned as it is."""
    name, bracket, inside = label.partition("[")
    posterior = group(tree, "posterior")
    if not bracket or posterior is None or name not in posterior:
        return label
    parts = [v.strip() for v in inside.rstrip("]").split(",")]
    dims = [d for d in posterior[name].dims if d not in SAMPLE_DIMS]
    if len(dims) != len(parts) or not all(v.lstrip("-").isdigit() for v in parts):
        return label
    da, words = posterior[name], []
    for d, v in zip(dims, map(int, parts)):
        if not 0 <= v < da.sizes[d]:
            return label
        if d == "component":
            words.append(component_names(tree, da.sizes[d])[v])
        elif d in da.coords:
            words.append(str(da[d].values[v]))
        else:
            words.append(str(v))
    return f"{name}[{', '.join(words)}]"


def component_names(tree: xr.DataTree, k: int) -> list[str]:
    """The components' names the spec gave (``[model] labels``, kept in ``data.attrs["component_labels"]``),
    else their indices as text."""
    data = group(tree, "data")
    raw = data.attrs.get("component_labels") if data is not None else None
    try:
        names = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        names = None
    if isinstance(names, list) and len(names) == k and all(isinstance(n, str) for n in names):
        return names
    return [str(c) for c in range(k)]


def _named(label: str, name: str, where: dict, names: list[str] | None, label_dims=("component",)) -> str:
    """``theta[0]`` as ``theta[A]`` (and a transition matrix's ``P[0, 1]`` as ``P[A, B]``) when the
    components have names and every index of the scalar is a label."""
    if names is None or not where or not set(where) <= set(label_dims):
        return label
    return f"{name}[{', '.join(names[where[d]] for d in where)}]"


def _observation_dims(tree: xr.DataTree) -> set[str]:
    data = group(tree, "data")
    return {da.dims[0] for da in data.data_vars.values() if da.dims} if data is not None else set()


def parameter_names(tree: xr.DataTree) -> list[str]:
    """The reported parameters in report order, as the results file declares them (root attribute
    ``parameters``). A file written before the declaration: the ``em`` variables indexed by component and
    by no observation (``resp`` is per observation), in the file's order, which was the report's."""
    declared = root_json(tree, "parameters")
    if isinstance(declared, list) and all(isinstance(name, str) for name in declared):
        return declared
    em = group(tree, "em")
    if em is None:
        return []
    observation = _observation_dims(tree)
    return [str(name) for name, da in em.data_vars.items()
            if "component" in da.dims and not observation & set(da.dims)]


def interval_prob(tree: xr.DataTree) -> float:
    spec = root_json(tree, "spec", {}) or {}
    report = spec.get("report", {}) if isinstance(spec, dict) else {}
    return float(report.get("interval_prob", 0.89) or 0.89)


def equal_tailed(values: np.ndarray, prob: float) -> tuple[float, float]:
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return NAN2
    tail = (1 - prob) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def hdi(values: np.ndarray, prob: float) -> tuple[float, float]:
    """Narrowest interval holding ``prob`` of the draws."""
    x = np.sort(np.asarray(values, dtype=float).ravel())
    n = len(x)
    if n < 2:
        return NAN2
    m = min(n - 1, max(1, int(np.floor(prob * n))))
    i = int(np.argmin(x[m:] - x[: n - m]))
    return float(x[i]), float(x[i + m])


def posterior_group(tree: xr.DataTree) -> tuple[xr.Dataset | None, bool]:
    """The draws to summarise per component, and whether they are the relabelled ones."""
    relabelled = group(tree, "posterior_relabelled")
    if relabelled is not None:
        return relabelled, True
    return group(tree, "posterior"), False


def multimodal(tree: xr.DataTree) -> xr.Dataset | None:
    """The ``posterior_modes`` group when the chains sit in more than one mode, else ``None``."""
    modes = group(tree, "posterior_modes")
    if modes is None or int(modes.attrs.get("n_modes", modes.sizes.get("mode", 1))) < 2:
        return None
    return modes


def main_mode_chains(tree: xr.DataTree) -> np.ndarray | None:
    """Positions of the chains in the main mode when the posterior is multimodal, else ``None`` (all)."""
    modes = multimodal(tree)
    if modes is None:
        return None
    return np.flatnonzero(modes["chain_mode"].values == int(modes.attrs.get("main_mode", 0)))


def elements(da: xr.DataArray, skip_dims=SAMPLE_DIMS + ("replicate", "iteration", "restart")):
    """``(label, {dim: index})`` for each scalar of ``da`` outside the sample dimensions.

    Labels use coordinate values where the dimension has them (feature names), indices otherwise;
    for a covariance only the upper triangle (``feature <= feature_bis``). A parameter whose family gave
    a template for its elements (attribute ``element_label``: "transition, state {component} -> state
    {component_to}") is labelled by it, each index counted from 1.
    """
    dims = [d for d in da.dims if d not in skip_dims]
    shape = [da.sizes[d] for d in dims]
    out = []
    for index in np.ndindex(*shape):
        where = dict(zip(dims, index))
        if "feature" in where and "feature_bis" in where and where["feature_bis"] < where["feature"]:
            continue
        out.append((element_label(da, where), where))
    return out


def element_label(da: xr.DataArray, where: dict) -> str:
    """The label of element ``where`` (dim -> index) of ``da``: the family's template when the variable
    carries one and it names exactly these dims, else ``name[i, j]``."""
    template = da.attrs.get(ELEMENT_LABEL_ATTR)
    if isinstance(template, str) and template:
        try:
            return template.format(**{d: i + 1 for d, i in where.items()})
        except (KeyError, IndexError, ValueError):
            pass  # a template naming other dims (a summary reshaped): the plain label below
    names = [str(da[d].values[i]) if d in da.coords else str(i) for d, i in where.items()]
    return f"{da.name}[{', '.join(names)}]" if names else str(da.name)


def _scalar(ds: xr.Dataset | None, name: str, where: dict) -> float:
    if ds is None or name not in ds:
        return float("nan")
    da = ds[name]
    sel = {d: i for d, i in where.items() if d in da.dims}
    try:
        return float(da.isel(sel).values)
    except (TypeError, ValueError, IndexError):
        return float("nan")


def parameter_rows(tree: xr.DataTree) -> list[ParamRow]:
    """One row per scalar of each reported parameter of ``em``."""
    em = group(tree, "em")
    if em is None:
        return []
    prob = interval_prob(tree)
    posterior, _ = posterior_group(tree)
    chains = main_mode_chains(tree)
    if posterior is not None and chains is not None:
        posterior = posterior.isel(chain=chains)
    info = group(tree, "em_information")
    boot = group(tree, "em_bootstrap")
    exact = group(tree, "exact")
    rows = []
    data = group(tree, "data")
    named = data is not None and "component_labels" in data.attrs and "component" in em.sizes
    names = component_names(tree, em.sizes["component"]) if named else None
    for name in parameter_names(tree):
        if name not in em:
            continue
        label_dims = label_dims_of(em[name])
        for label, where in elements(em[name]):
            fields: dict = {"label": _named(label, name, where, names, label_dims), "name": name,
                            "em": _scalar(em, name, where)}
            draws = None
            if posterior is not None and name in posterior:
                sel = {d: i for d, i in where.items() if d in posterior[name].dims}
                draws = posterior[name].isel(sel).values.ravel()
            if draws is not None and np.ptp(draws) == 0:
                fields.update(fixed=True, post_mean=float(draws[0]))
            elif draws is not None:
                fields.update(post_mean=float(draws.mean()), post_sd=float(draws.std(ddof=1)),
                              post_eti=equal_tailed(draws, prob), post_hdi=hdi(draws, prob))
            if info is not None:
                fields.update(se=_scalar(info, f"se_{name}", where),
                              wald=(_scalar(info, f"wald_lower_{name}", where), _scalar(info, f"wald_upper_{name}", where)))
            if boot is not None and name in boot and "replicate" in boot[name].dims:
                sel = {d: i for d, i in where.items() if d in boot[name].dims}
                fields["bootstrap"] = equal_tailed(boot[name].isel(sel).values, prob)
            if exact is not None:
                fields.update(exact_mean=_scalar(exact, f"{name}_mean", where), exact_sd=_scalar(exact, f"{name}_sd", where))
            rows.append(ParamRow(**fields))
    return rows


def group_parameters(ds: xr.Dataset | None) -> list[str]:
    """The parameters in one group: its variables declared as parameters (attribute ``label_dims``, in
    the group's order, which the declaration made the report's); in a file written before the
    declaration, :data:`LEGACY_PARAMETERS`."""
    if ds is None:
        return []
    declared = [str(name) for name, da in ds.data_vars.items() if LABEL_DIMS_ATTR in da.attrs]
    if declared:
        return declared
    return [name for name in LEGACY_PARAMETERS if name in ds]


def varying_names(ds: xr.Dataset | None) -> list[str]:
    """Reported parameters present in ``ds`` that are not constant (fixed weights carry nothing)."""
    return [name for name in group_parameters(ds) if np.ptp(ds[name].values) > 0]


def display_draws(ds: xr.Dataset, max_draws: int = 400) -> xr.Dataset:
    """The draws to plot: varying parameters, a covariance shown by its variances, thinned per chain.

    Off-diagonal covariances are in the comparison table; plotting them too would double the page. A
    spherical covariance's variances are one number per component, shown once, not once per feature
    (for the heroes spec 3 panels instead of 36, a third of its trace and rank plots' panels).
    """
    out = xr.Dataset()
    for name in varying_names(ds):
        da = ds[name]
        if name == "cov" and "feature_bis" in da.dims:
            n = da.sizes["feature"]
            diag = np.stack([da.isel(feature=i, feature_bis=i).values for i in range(n)], axis=-1)
            dims = [d for d in da.dims if d not in ("feature", "feature_bis")]
            if n > 1 and np.all(diag == diag[..., :1]):
                out["variance"] = (dims, diag[..., 0])
                continue
            out["variance"] = (dims + ["feature"], diag)
            if "feature" in da.coords:
                out = out.assign_coords(feature=da["feature"].values)
        else:
            out[name] = da
    step = max(1, int(np.ceil(out.sizes.get("draw", 1) / max_draws))) if "draw" in out.dims else 1
    return out.isel(draw=slice(None, None, step)) if step > 1 else out
