"""The uncertainty ladder section: one table per parameter with every rung, from the results file alone.

Reads the ``uncertainty_ladder`` group (layout in :mod:`emvsbayes.ladder.results`): rows are rungs in
the file's order (the sentence each rung assumes in a table of its own); columns are the parameter's elements (a
component, or a component and a coordinate), each cell "estimate (lower – upper)". A rung that gives no
number for a parameter shows a dash. Returns "" when the run wrote no ladder.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from emvsbayes.report.markup import Raw, esc, fmt, fmt_interval, paragraph, subsection, table

__all__ = ["interval_figure", "ladder_section", "parameter_table", "partition_section", "similarity_heatmaps"]

GROUP = "uncertainty_ladder"


#: how the page names each rung (the results file keeps the short identifiers)
RUNG_TITLES = {"mle_wald": "MLE + Wald", "bootstrap_nonparametric": "bootstrap (rows resampled)",
               "bootstrap_parametric": "bootstrap (parametric)", "map_em": "MAP by EM", "laplace": "Laplace",
               "advi_meanfield": "ADVI, mean-field", "advi_fullrank": "ADVI, full-rank",
               "bootstrap_bayesian": "Bayesian bootstrap", "nuts": "NUTS (posterior)",
               "exact": "exact posterior (enumeration)"}


def rung_title(rung) -> str:
    return RUNG_TITLES.get(str(rung), str(rung))


def _tree(ctx_or_tree) -> xr.DataTree:
    return getattr(ctx_or_tree, "tree", ctx_or_tree)


def _element_labels(da: xr.DataArray) -> list[tuple[dict, str]]:
    """(index selection, label) of every element of ``da`` past its ``rung`` dim."""
    dims = [d for d in da.dims if d != "rung"]
    out = []
    for index in np.ndindex(*(da.sizes[d] for d in dims)):
        where = dict(zip(dims, index))
        parts = [str(da[d].values[i]) if d in da.coords else str(i) for d, i in where.items()]
        out.append((where, ", ".join(parts)))
    return out


def _full_label(da: xr.DataArray, name: str, where: dict, label: str):
    """A column's name: the family's template for the element when the parameter carries one (as every other
    table names it), else ``name[label]``."""
    from emvsbayes.report.params import element_label
    from emvsbayes.results import ELEMENT_LABEL_ATTR

    if da.attrs.get(ELEMENT_LABEL_ATTR):
        return element_label(da, where)
    return Raw(f"{esc(name)}[{esc(label)}]") if label else name


def parameter_table(ds: xr.Dataset, name: str) -> str:
    """The table of parameter ``name``: one row per rung, one column per element."""
    estimate = ds[name]
    lower, upper = ds.get(f"{name}_lower"), ds.get(f"{name}_upper")
    elements = _element_labels(estimate)
    header = ["rung", *[_full_label(estimate, name, where, label) for where, label in elements]]
    rows = []
    for r, rung in enumerate(ds["rung"].values):
        cells = [rung_title(rung)]
        for where, _ in elements:
            at = {"rung": r, **where}
            value = float(estimate.isel(at))
            interval = ("" if lower is None or upper is None else
                        fmt_interval(float(lower.isel(at)), float(upper.isel(at))))
            cells.append(fmt(value) + (f" ({interval})" if interval and interval != "–" else ""))
        rows.append(cells)
    return table(header, rows, cls="ladder")


def interval_figure(ds: xr.Dataset, name: str) -> str:
    """Every rung's estimate and interval of parameter ``name``: one row per rung (top: EM's point), one
    colour per element, as wide as the page."""
    import matplotlib.pyplot as plt

    from emvsbayes.report.figures import to_svg

    estimate = ds[name]
    lower, upper = ds.get(f"{name}_lower"), ds.get(f"{name}_upper")
    elements = _element_labels(estimate)
    rungs = [rung_title(r) for r in ds["rung"].values]
    fig, ax = plt.subplots(figsize=(11.0, 0.42 * len(rungs) + 0.9))
    step = 0.6 / max(len(elements), 1)
    for e, (where, label) in enumerate(elements):
        offset = (e - (len(elements) - 1) / 2) * step
        colour = f"C{e % 10}"
        for r in range(len(rungs)):
            at = {"rung": r, **where}
            y = r + offset
            if lower is not None and upper is not None:
                lo, hi = float(lower.isel(at)), float(upper.isel(at))
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.plot([lo, hi], [y, y], color=colour, lw=2, solid_capstyle="butt")
            value = float(estimate.isel(at))
            if np.isfinite(value):
                ax.plot([value], [y], "o", color=colour, ms=4, label=str(_full_label(estimate, name, where, label)))
    # The axis spans the rungs that can be trusted (Pareto k at most 0.7, or none): an approximation PSIS
    # rejects may run off it rather than squash every other rung's interval to a dot.
    trusted = ~(ds["pareto_k"].values > 0.7) if "pareto_k" in ds else np.ones(len(rungs), dtype=bool)
    if lower is not None and upper is not None:
        # Also a rung whose widest interval is ten times the rungs' median (PSIS may give no k at all).
        width = np.nanmax((upper - lower).values.reshape(len(rungs), -1), axis=1, initial=0.0)
        width = np.where(np.isfinite(width), width, 0.0)
        trusted &= ~(width > 10 * np.median(width[width > 0])) if (width > 0).any() else True
    if trusted.any() and not trusted.all():
        ends = [ds[v].values[trusted] for v in (name, f"{name}_lower", f"{name}_upper") if v in ds]
        finite = np.concatenate([e.ravel() for e in ends])
        finite = finite[np.isfinite(finite)]
        if finite.size:
            lo, hi = finite.min(), finite.max()
            pad = 0.08 * (hi - lo) if hi > lo else 0.1 * max(abs(lo), 1.0)
            ax.set_xlim(lo - pad, hi + pad)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.set_yticks(range(len(rungs)), rungs)
    ax.set_ylim(len(rungs) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(name)
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    return to_svg(fig)


def _wide(html: str) -> str:
    return html.replace('class="fig"', 'class="fig wide"', 1)


def ladder_section(ctx_or_tree) -> str:
    """Every parameter's table, then the rungs' costs and Pareto k; "" without the group."""
    tree = _tree(ctx_or_tree)
    if GROUP not in tree.children:
        return ""
    ds = tree[GROUP].to_dataset()
    if "component" in ds.dims:  # the spec's names of the components (theta[A]), as every other table shows
        from emvsbayes.report.params import component_names

        k = ds.sizes["component"]
        named = component_names(tree, k)
        if named != [str(c) for c in range(k)]:
            ds = ds.assign_coords(component=named)
    names = json.loads(ds.attrs["parameters"]) if "parameters" in ds.attrs else [
        v for v in ds.data_vars if ds[v].dims[:1] == ("rung",) and not v.endswith(("_sd", "_lower", "_upper"))
        and v not in ("assumes", "seconds", "pareto_k")]
    prob = float(ds.attrs.get("interval_prob", np.nan))
    parts = [paragraph(f"Each cell: the rung's estimate and its {fmt(100 * prob, 3)}% interval. Rungs run from "
                       "EM's point to the full posterior.")]
    from emvsbayes.report.markup import figure

    if "assumes" in ds:
        parts.append(subsection("What each rung assumes", table(["rung", "what it assumes"], [
            [rung_title(rung), str(ds["assumes"].values[i])] for i, rung in enumerate(ds["rung"].values)], cls="ladder-assumes")))
    skipped = json.loads(ds.attrs.get("skipped", "{}"))
    if skipped:
        parts.append(paragraph("Not computed: " + "; ".join(f"{rung_title(rung)}: {why}" for rung, why in skipped.items()) + "."))
    for name in names:
        if name in ds:
            parts.append(subsection(name, parameter_table(ds, name)))
            parts.append(_wide(figure(interval_figure(ds, name), f"ladder-{name}",
                                      f"{name}: every rung's estimate (dot) and {fmt(100 * prob, 3)}% interval (bar); "
                                      "a rung without a bar gives a point only; the axis spans the rungs with Pareto k "
                                      "at most 0.7 and intervals within ten times the median width, so an "
                                      "approximation far off may run off it")))
    cost_rows = [[rung_title(rung), fmt(ds["seconds"].values[i], 3) if "seconds" in ds else "–",
                  _pareto_cell(ds["pareto_k"].values[i]) if "pareto_k" in ds else "–"]
                 for i, rung in enumerate(ds["rung"].values)]
    parts.append(subsection("Cost and reliability", table(["rung", "seconds", "Pareto k (PSIS)"], cost_rows),
                            "Pareto k above 0.7: the approximation cannot be trusted (Yao et al. 2018); it is given "
                            "for the approximations whose draws can be importance-weighted (ADVI). Seconds: the rung's "
                            "own time; \u2013 where it is part of a stage of the run (EM and its information, the run's "
                            "bootstrap, MAP-EM), timed under Reproducibility."))
    return "".join(parts)


def _pareto_cell(k: float):
    """Pareto k as a cell, marked above 0.7 (the threshold the caption names)."""
    text = fmt(k, 3)
    return Raw(f'<span class="bad">{esc(text)}</span>') if np.isfinite(k) and k > 0.7 else text


PARTITION_GROUP = "coclustering"


#: Most cells per side of a similarity heat map (see :func:`similarity_heatmaps`).
MAX_CELLS = 40


def similarity_heatmaps(ds: xr.Dataset) -> str:
    """One heat map per source of the similarity matrix, rows and columns in EM's cluster order."""
    import matplotlib.pyplot as plt

    from emvsbayes.report.figures import to_svg

    order = np.argsort(ds["em_labels"].values, kind="stable")
    sources = list(ds["source"].values)
    fig, axes = plt.subplots(1, len(sources), figsize=(2.6 * len(sources) + 0.6, 2.8), squeeze=False)
    image = None
    # Vector cells, not an embedded raster (the page loads nothing, not even a data: image); above
    # MAX_CELLS observations, consecutive observations in EM's order are pooled into blocks and the
    # block's mean similarity shown, which keeps the page small.
    blocks = np.array_split(np.arange(len(order)), min(len(order), MAX_CELLS))
    for ax, source in zip(axes[0], sources):
        matrix = ds["similarity"].sel(source=source).values[np.ix_(order, order)]
        pooled = np.array([[matrix[np.ix_(a, b)].mean() for b in blocks] for a in blocks])
        image = ax.pcolormesh(pooled, vmin=0.0, vmax=1.0, cmap="viridis", edgecolors="none", rasterized=False)
        ax.set_xlim(0, len(blocks))
        ax.set_ylim(len(blocks), 0)
        ax.set_aspect("equal")
        ax.set_title(rung_title(source), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="P(same cluster)")
    bar.solids.set_rasterized(False)  # matplotlib rasterises a smooth colour bar: a data: image otherwise
    return to_svg(fig)


def partition_section(ctx_or_tree) -> str:
    """Co-clustering heat maps and the point partitions with their credible balls; "" without the group."""
    from emvsbayes.report.markup import figure

    tree = _tree(ctx_or_tree)
    if PARTITION_GROUP not in tree.children:
        return ""
    ds = tree[PARTITION_GROUP].to_dataset()
    parts = [paragraph("P(two observations in one cluster), needing no labels; rows and columns ordered by "
                       f"EM's clusters (above {MAX_CELLS} observations, blocks of neighbours in that order, "
                       "averaged)."),
             _wide(figure(similarity_heatmaps(ds), "coclustering", "Similarity matrices of every rung with draws"))]
    if "loss" in ds.dims:
        header = ["loss", "clusters", "expected loss"]
        has_ball = "ball_radius" in ds
        if has_ball:
            prob = fmt(100 * float(ds.attrs.get("ball_prob", np.nan)), 3)
            header += [f"{prob}% ball radius (VI, bits)", "furthest in the ball", "fewest clusters in it",
                       "most clusters in it"]
        rows = []
        for i, loss in enumerate(ds["loss"].values):
            row = [str(loss), str(int(ds["n_clusters"].values[i])), fmt(ds["expected_loss"].values[i])]
            if has_ball:
                row += [fmt(ds["ball_radius"].values[i]), fmt(ds["ball_horizontal_distance"].values[i]),
                        f"{int(ds['ball_upper_clusters'].values[i])} at {fmt(ds['ball_upper_distance'].values[i])}",
                        f"{int(ds['ball_lower_clusters'].values[i])} at {fmt(ds['ball_lower_distance'].values[i])}"]
            rows.append(row)
        parts.append(subsection("Point estimate of the partition", table(header, rows),
                                "The partition minimising the posterior expected loss, and its credible ball "
                                "(Wade & Ghahramani 2018)."))
    return "".join(parts)
