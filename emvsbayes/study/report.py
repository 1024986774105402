"""The study report: one self-contained HTML page rendered from ``study.nc`` alone.

Figures are inline SVG drawn with matplotlib; the page has no scripts and requests nothing from the
network; it uses the comparison report's stylesheet. Every string that came from the spec or from a
record (title, axis values, parameter names, error messages) is escaped.

Coverage studies: coverage of each kind of interval against the nominal level (with Monte Carlo error
bars), every interval (the run's and the uncertainty ladder's rungs) side by side against N with its
coverage +/- MCSE, width and cost (also written as ``coverage.svg``), bias and RMSE against N, label-switching rate against separation, ESS per second by sampler,
and a table per cell. SBC studies: rank histograms with the band a uniform histogram stays in, and
the chi-square uniformity test per quantity.
"""

from __future__ import annotations

import html
import itertools
import json
from importlib import resources
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.ticker import FuncFormatter, NullFormatter

from emvsbayes.report.figures import COLORS, drawing, plt, to_svg
from emvsbayes.results import atomic_write

N_AXES = ("n_obs", "n_sets", "n_time")
AXIS_LABELS = {"n_obs": "N (observations)", "n_sets": "N (sets of tosses)", "n_time": "T (time points)",
               "separation": "separation", "components": "K", "tosses": "tosses per set", "dim": "D",
               "sampler": "sampler", "variant": "variant", "prior": "prior", "emission": "emission",
               "initial": "initial distribution", "stay": "P(stay)", "rate": "lowest rate"}


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(x, digits=3) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return esc(x)
    return "–" if not np.isfinite(x) else f"{x:.{digits}g}"


def _table(header, rows) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>' if body else ""


def _axes(ds: xr.Dataset) -> list[str]:
    return json.loads(ds.attrs.get("grid_axes", "[]"))


def _cells(ds: xr.Dataset, axes: list[str]):
    """(label, selection dict) for every cell of the grid."""
    for combo in itertools.product(*[ds[a].values.tolist() for a in axes]):
        sel = dict(zip(axes, combo))
        yield ", ".join(f"{a}={v}" for a, v in sel.items()) or "the one cell", sel


def _lines(ds: xr.Dataset, x_axis: str, axes: list[str]):
    """(label, selection of the other axes) for each line of a plot against ``x_axis``."""
    others = [a for a in axes if a != x_axis]
    yield from _cells(ds, others)


def _x_values(ds, x_axis):
    values = ds[x_axis].values
    return values if np.issubdtype(values.dtype, np.number) else np.arange(values.size)


# --- coverage ---------------------------------------------------------------------------------------


def _interval_kinds(ds) -> list[str]:
    return [name.removeprefix("coverage_") for name in ds.data_vars
            if name.startswith("coverage_") and not name.startswith("coverage_mcse_")]


def coverage_figure(ds: xr.Dataset, axes: list[str]) -> str:
    """Coverage (averaged over parameters) of each kind of interval per cell, against the nominal level."""
    kinds = _interval_kinds(ds)
    if not kinds:
        return ""
    nominal = float(ds.attrs.get("nominal", np.nan))
    x_axis = next((a for a in axes if a in N_AXES), axes[0] if axes else None)
    fig, panels = plt.subplots(1, len(kinds), figsize=(3.3 * len(kinds), 3.0), sharey=True, squeeze=False)
    for ax, kind in zip(panels[0], kinds):
        covered = ds[f"{kind}_covered"]
        for i, (label, sel) in enumerate(_lines(ds, x_axis, axes) if x_axis else [("", {})]):
            sub = covered.sel(sel) if sel else covered
            per_cell = sub.mean(("replicate", "parameter"), skipna=True)
            # Parameters of one replicate are not independent draws: the MC error of their mean is at most
            # that of one share of the replicates (a [0, 1] variable of mean p has variance <= p(1 - p)).
            n = sub.notnull().any("parameter").sum("replicate")
            se = np.sqrt(per_cell * (1 - per_cell) / n.clip(min=1))
            x = _x_values(ds, x_axis) if x_axis else np.array([0])
            ax.errorbar(x, np.atleast_1d(per_cell.values), yerr=2 * np.atleast_1d(se.values), marker="o", ms=4,
                        capsize=3, color=COLORS[i % len(COLORS)], label=label or None)
        ax.axhline(nominal, color="0.3", ls="--", lw=1, label=f"nominal {nominal:g}")
        ax.set(title=f"{kind} intervals", xlabel=AXIS_LABELS.get(x_axis, x_axis or ""), ylim=(0, 1.02))
        if x_axis and not np.issubdtype(ds[x_axis].values.dtype, np.number):
            ax.set_xticks(np.arange(ds.sizes[x_axis]), [str(v) for v in ds[x_axis].values])
    panels[0][0].set_ylabel("coverage (mean over parameters)")
    panels[0][-1].legend(fontsize=7, frameon=False)
    return to_svg(fig)


LADDER_NAMES = {"wald": "MLE + Wald", "bootstrap": "nonparametric bootstrap", "posterior": "NUTS posterior",
                "laplace": "Laplace", "bootstrap_bayesian": "Bayesian bootstrap", "advi_meanfield": "ADVI mean-field",
                "advi_fullrank": "ADVI full-rank"}


#: The timing stage that is an interval's cost, where it is not named after the interval (NUTS's is its sampling;
#: compiling is a cell's once-per-worker cost, not a replicate's).
COST_STAGES = {"posterior": "sampling"}


def _variables(ds) -> list[str]:
    """Variable names of the parameters ("mu" of "mu[0]"), in order of first appearance."""
    return list(dict.fromkeys(str(p).split("[")[0] for p in ds["parameter"].values))


def _group_coverage(cell: xr.Dataset, kind: str, variable: str | None) -> tuple[float, float, int]:
    """(coverage, its Monte Carlo standard error, replicates) of ``kind`` pooled over the parameters of
    ``variable`` (all parameters when None) in one cell.

    The MCSE is sqrt(p (1 - p) / n) with n the replicates that gave an interval: the parameters of one
    replicate are not independent, and the share of them covered, a number in [0, 1] with mean p, has
    variance at most p (1 - p), so this bounds the error of the pooled figure (and is exact for one parameter).
    """
    covered = cell[f"{kind}_covered"]
    if variable is not None:
        keep = [p for p in covered["parameter"].values if str(p).split("[")[0] == variable]
        covered = covered.sel(parameter=keep)
    n = int(covered.notnull().any("parameter").sum())
    if n == 0:
        return float("nan"), float("nan"), 0
    p = float(covered.mean(skipna=True))
    return p, float(np.sqrt(p * (1 - p) / n)), n


def _kinds_in_order(ds) -> list[str]:
    kinds = _interval_kinds(ds)
    return [k for k in LADDER_NAMES if k in kinds] + [k for k in kinds if k not in LADDER_NAMES]


def rung_figure(ds: xr.Dataset, axes: list[str]) -> str:
    """Coverage of every interval (rung) against N, one panel per variable (and one pooling all), with
    +/-2 MCSE bars and the nominal line; one row of panels per value of the other grid axes."""
    kinds = _kinds_in_order(ds)
    x_axis = next((a for a in axes if a in N_AXES), None)
    if not kinds or x_axis is None:
        return ""
    nominal = float(ds.attrs.get("nominal", np.nan))
    groups = [None, *_variables(ds)]
    rows = list(_lines(ds, x_axis, axes))
    fig, panels = plt.subplots(len(rows), len(groups), figsize=(3.0 * len(groups), 2.9 * len(rows)), squeeze=False,
                               sharey=True)
    x = _x_values(ds, x_axis)
    offsets = (np.arange(len(kinds)) - (len(kinds) - 1) / 2) * 0.035  # side by side on a log axis
    for r, (label, sel) in enumerate(rows):
        for c, variable in enumerate(groups):
            ax = panels[r][c]
            for i, kind in enumerate(kinds):
                stats = [_group_coverage(ds.sel({**sel, x_axis: v}), kind, variable) for v in ds[x_axis].values]
                p = np.array([s[0] for s in stats])
                se = np.array([s[1] for s in stats])
                ax.errorbar(x * 10 ** offsets[i], p, yerr=2 * se, marker="o", ms=3.5, capsize=2, lw=1.2,
                            color=COLORS[i % len(COLORS)], label=LADDER_NAMES.get(kind, kind) if r == c == 0 else None)
            ax.axhline(nominal, color="0.3", ls="--", lw=1)
            ax.set_xscale("log")
            ax.set_xticks(x, [str(v) for v in ds[x_axis].values])
            ax.minorticks_off()
            title = "all parameters" if variable is None else variable
            ax.set_title(title + (f"\n{label}" if label and len(rows) > 1 else ""), fontsize=9)
            ax.set_xlabel(AXIS_LABELS.get(x_axis, x_axis), fontsize=8)
        panels[r][0].set_ylabel(f"coverage (nominal {nominal:g})")
    fig.legend(*panels[0][0].get_legend_handles_labels(), loc="lower center", ncol=min(len(kinds), 4), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.08 if len(kinds) <= 4 else 0.13, 1, 1))
    return to_svg(fig)


def rung_table(ds: xr.Dataset, axes: list[str]) -> str:
    """Per cell and interval: coverage +/- MCSE (all parameters and per variable), mean width per variable,
    median seconds per replicate and failures."""
    kinds = _kinds_in_order(ds)
    if not kinds:
        return ""
    variables = _variables(ds)
    header = [*axes, "interval", "coverage (all) ± MCSE", *[f"coverage {v} ± MCSE" for v in variables],
              *[f"mean width {v}" for v in variables], "median s / replicate", "replicates"]
    rows = []
    for _, sel in _cells(ds, axes):
        cell = ds.sel(sel) if sel else ds
        for kind in kinds:
            row = [*sel.values(), LADDER_NAMES.get(kind, kind)]
            for variable in (None, *variables):
                p, se, _ = _group_coverage(cell, kind, variable)
                row.append(f"{fmt(p)} ± {fmt(se, 2)}")
            width = cell[f"{kind}_width"]
            for variable in variables:
                keep = [q for q in width["parameter"].values if str(q).split("[")[0] == variable]
                row.append(fmt(width.sel(parameter=keep).mean(skipna=True)))
            stage = f"time_{COST_STAGES.get(kind, kind)}"
            row.append(fmt(cell[stage].median(skipna=True)) if stage in cell else "–")
            row.append(_group_coverage(cell, kind, None)[2])
            rows.append(row)
    return _table(header, rows)


def error_figure(ds: xr.Dataset, axes: list[str]) -> str:
    """Bias and RMSE of the EM estimate and the posterior mean against N, one line per parameter."""
    x_axis = next((a for a in axes if a in N_AXES), None)
    estimators = [e for e in ("em", "post") if f"bias_{e}" in ds]
    if x_axis is None or not estimators:
        return ""
    names = {"em": "EM", "post": "posterior mean"}
    fig, panels = plt.subplots(2, len(estimators), figsize=(4.2 * len(estimators), 5.4), squeeze=False, sharex=True)
    styles = ("-", "--", ":", "-.")
    x = _x_values(ds, x_axis)
    for col, estimator in enumerate(estimators):
        for row, stat in enumerate(("bias", "rmse")):
            ax = panels[row][col]
            da = ds[f"{stat}_{estimator}"]
            for j, (label, sel) in enumerate(_lines(ds, x_axis, axes)):
                sub = da.sel(sel) if sel else da
                for i, parameter in enumerate(ds["parameter"].values):
                    ax.plot(x, np.atleast_1d(sub.sel(parameter=parameter).values), marker="o", ms=3,
                            ls=styles[j % len(styles)], color=COLORS[i % len(COLORS)],
                            label=f"{parameter}" + (f" ({label})" if label else "") if row == 0 and col == 0 else None)
            if stat == "bias":
                ax.axhline(0, color="0.5", lw=0.8)
            ax.set(title=f"{stat} of {names[estimator]}", xlabel=AXIS_LABELS.get(x_axis, x_axis))
    panels[0][0].legend(fontsize=6, frameon=False, ncol=2)
    fig.tight_layout()  # the lower panels' titles clear of the upper panels' axis labels
    return to_svg(fig)


def switching_figure(ds: xr.Dataset, axes: list[str]) -> str:
    """Share of draws relabelled, and switches per chain, against separation."""
    if "switch_share" not in ds or "separation" not in axes:
        return ""
    fig, panels = plt.subplots(1, 2, figsize=(8.0, 3.0))
    x = _x_values(ds, "separation")
    for i, (label, sel) in enumerate(_lines(ds, "separation", axes)):
        for ax, name in zip(panels, ("switch_share", "switches_per_chain")):
            sub = ds[name].sel(sel) if sel else ds[name]
            ax.plot(x, np.atleast_1d(sub.mean("replicate", skipna=True).values), marker="o", ms=4,
                    color=COLORS[i % len(COLORS)], label=label or None)
    panels[0].set(xlabel="separation", ylabel="share of draws relabelled", ylim=(0, 1))
    panels[1].set(xlabel="separation", ylabel="switches per chain")
    if len(list(_lines(ds, "separation", axes))) > 1:
        panels[1].legend(fontsize=7, frameon=False)
    return to_svg(fig)


def ess_figure(ds: xr.Dataset, axes: list[str]) -> str:
    """Bulk ESS (smallest over parameters, after relabelling) per second of sampling, by sampler."""
    if "ess_per_second" not in ds:
        return ""
    group_axis = "sampler" if "sampler" in axes else None
    groups = ([(str(v), ds["ess_per_second"].sel(sampler=v)) for v in ds["sampler"].values] if group_axis
              else [(ds.attrs.get("sampler_default", "sampler"), ds["ess_per_second"])])
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(groups), 3.0))
    data = [g.values[np.isfinite(g.values)] for _, g in groups]
    ax.boxplot(data, tick_labels=[label for label, _ in groups])
    ax.set(ylabel="min bulk ESS / second", yscale="log" if all(d.size and d.min() > 0 for d in data) else "linear")
    # plain tick text: the SVG keeps text as text, where the log axis's default mathtext labels would show their
    # TeX source ("$\\mathdefault{10^{4}}$")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    return to_svg(fig)


def cell_table(ds: xr.Dataset, axes: list[str]) -> str:
    kinds = _interval_kinds(ds)
    header = [*axes, "ok", "failed", *[f"coverage {k}" for k in kinds], *[f"width {k}" for k in kinds],
              "R-hat max", "ESS/s", "divergences", "switch share", "EM optima", "compiled", "mean s per replicate"]
    rows = []
    for _, sel in _cells(ds, axes):
        cell = ds.sel(sel) if sel else ds
        ok = cell["status"] == 1
        row = [*sel.values(), int(ok.sum()), int((cell["status"] == 0).sum())]
        row += [fmt(cell[f"coverage_{k}"].mean(skipna=True)) for k in kinds]
        row += [fmt(cell[f"width_{k}"].mean(skipna=True)) for k in kinds]
        for name, reduce in (("rhat_max", "max"), ("ess_per_second", "median"), ("divergences", "sum"),
                             ("switch_share", "mean"), ("n_optima", "mean")):
            row.append(fmt(getattr(cell[name], reduce)(skipna=True)) if name in cell else "–")
        row.append(int(cell["compiled"].sum()))
        row.append(fmt(cell["time_total"].mean(skipna=True)) if "time_total" in cell else "–")
        rows.append(row)
    return _table(header, rows)


def parameter_table(ds: xr.Dataset, axes: list[str]) -> str:
    kinds = _interval_kinds(ds)
    header = [*axes, "parameter", *[f"coverage {k}" for k in kinds], "bias EM", "RMSE EM", "bias post", "RMSE post"]
    rows = []
    for _, sel in _cells(ds, axes):
        cell = ds.sel(sel) if sel else ds
        for parameter in ds["parameter"].values:
            p = cell.sel(parameter=parameter)
            rows.append([*sel.values(), parameter,
                         *[f"{fmt(p[f'coverage_{k}'])} ± {fmt(p[f'coverage_mcse_{k}'], 2)}" if f"coverage_mcse_{k}" in p
                           else fmt(p[f"coverage_{k}"]) for k in kinds],
                         *[fmt(p[name]) if name in p else "–" for name in ("bias_em", "rmse_em", "bias_post", "rmse_post")]])
    return _table(header, rows)


# --- SBC -------------------------------------------------------------------------------------------


#: rank histograms side by side in the study page's figure (more wrap to the next row)
RANK_PANELS_PER_ROW = 4


def rank_histograms(ds: xr.Dataset, axes: list[str]) -> str:
    if "rank_counts" not in ds:
        return ""
    from emvsbayes.study.sbc import uniform_band

    quantities = ds["quantity"].values
    cell_list = list(_cells(ds, axes))
    # at most RANK_PANELS_PER_ROW panels side by side: a row of eight (a 2-state HMM's quantities) scaled to the
    # page's width left titles too small to read
    per_row = min(len(quantities), RANK_PANELS_PER_ROW)
    rows_per_cell = -(-len(quantities) // per_row)
    fig, panels = plt.subplots(len(cell_list) * rows_per_cell, per_row,
                               figsize=(2.8 * per_row, 2.3 * len(cell_list) * rows_per_cell), squeeze=False)
    for ax in panels.ravel():  # shown again below where a histogram is drawn: a short last row leaves blanks
        ax.set_visible(False)
    bins = ds.sizes["bin"]
    for cell_index, (label, sel) in enumerate(cell_list):
        cell = ds.sel(sel) if sel else ds
        for index, q in enumerate(quantities):
            row, col = cell_index * rows_per_cell + index // per_row, index % per_row
            ax = panels[row][col]
            ax.set_visible(True)
            counts = cell["rank_counts"].sel(quantity=q).values
            n = int(counts.sum())
            low, high = uniform_band(n, bins) if n else (0, 0)
            ax.axhspan(low, high, color="0.88", zorder=0)
            ax.axhline(n / bins if n else 0, color="0.5", lw=0.8)
            ax.bar(np.arange(bins), counts, width=0.9, color=COLORS[0])
            ax.set_title(f"{q}\np = {fmt(cell['p_value'].sel(quantity=q))}" + (f"\n{label}" if label and len(cell_list) > 1 else ""),
                         fontsize=8)
            ax.set_xticks([])
            if col == 0:
                ax.set_ylabel("replicates")
    fig.tight_layout()
    return to_svg(fig)


def sbc_table(ds: xr.Dataset, axes: list[str]) -> str:
    header = [*axes, "quantity", "replicates", "chi-square", "p-value", "cell passes", "ESS < ranks (replicates)"]
    rows = []
    alpha = ds.attrs.get("alpha")
    for _, sel in _cells(ds, axes):
        cell = ds.sel(sel) if sel else ds
        for q in ds["quantity"].values:
            rows.append([*sel.values(), q, int(cell["rank"].sel(quantity=q).notnull().sum()), fmt(cell["chi2"].sel(quantity=q)),
                         fmt(cell["p_value"].sel(quantity=q)), "yes" if int(cell["sbc_pass"]) else f"NO (alpha {alpha})",
                         int(np.nansum(cell["ess_below_ranks"].values)) if "ess_below_ranks" in cell else "–"])
    return _table(header, rows)


# --- page ------------------------------------------------------------------------------------------


def failures(ds: xr.Dataset, axes: list[str]) -> str:
    """One row per cell and error: the replicates that failed with it as ranges ("0-7, 9"), so a cause every
    replicate met (a worker's set-up) reads as one line per cell, not one per replicate."""
    rows = []
    for _, sel in _cells(ds, axes):
        cell = ds.sel(sel) if sel else ds
        by_error: dict[str, list[int]] = {}
        for r in cell["replicate"].values:
            status = int(cell["status"].sel(replicate=r))
            if status != 1:
                message = str(cell["error"].sel(replicate=r).values) if status == 0 else "not run"
                by_error.setdefault(message, []).append(int(r))
        rows += [[*sel.values(), _ranges(replicates), message] for message, replicates in by_error.items()]
    return _table([*axes, "replicates", "error"], rows) if rows else ""


def _ranges(numbers: list[int]) -> str:
    """Sorted whole numbers as ranges: [0, 1, 2, 3, 5] -> "0-3, 5"."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def timing_table(ds: xr.Dataset) -> str:
    stages = [name for name in ds.data_vars if name.startswith("time_")]
    rows = [[name.removeprefix("time_"), fmt(ds[name].mean(skipna=True)), fmt(ds[name].max(skipna=True)),
             fmt(ds[name].sum(skipna=True))] for name in stages]
    return _table(["stage", "mean s", "max s", "total s"], rows) if rows else ""  # none when no replicate succeeded


def _workers(n: int) -> str:
    return f"{n} worker{'' if n == 1 else 's'}"


def provenance_rows(ds: xr.Dataset) -> list[list[str]]:
    """What computed the replicates, one row per invocation of the study that computed some (from the
    records' ``invocation*`` variables), and what wrote this file: a rerun that found every replicate
    stored computed none and started no cluster, so its own cluster says nothing about the results."""
    rows = []
    if "invocation" in ds:
        computed = (ds["status"] >= 0).values.ravel()
        ids = ds["invocation"].values.ravel()
        clusters, workers = ds["invocation_cluster"].values.ravel(), ds["invocation_workers"].values.ravel()
        arrival = ds["invocation_arrival"].values.ravel()
        for invocation in dict.fromkeys(ids[computed & (ids != "")]):
            mine = computed & (ids == invocation)
            started = str(invocation).split(" pid ")[0].replace("T", " ").replace("+00:00", " UTC")
            last = fmt(np.nanmax(arrival[mine]), 3)
            rows.append(["computed by", f"{clusters[mine][0]} with {_workers(int(workers[mine][0]))}: "
                                        f"{int(mine.sum())} replicates, the last of them {last} s after the "
                                        f"invocation's start ({started})"])
        unrecorded = int((computed & (ids == "")).sum())
    else:
        unrecorded = int((ds["status"] >= 0).sum())
    if unrecorded:
        rows.append(["computed by", f"{unrecorded} replicates by an earlier version (cluster not recorded)"])
    seconds = fmt(ds.attrs.get("seconds"), 4)
    # Files written before "computed" was kept: an invocation that started no cluster computed nothing.
    if int(ds.attrs.get("computed", ds.attrs.get("workers", 0))) == 0:
        rows.append(["this file", f"written from the stored replicates, none computed ({seconds} s)"])
    else:
        rows.append(["this file", f"written by the invocation on {ds.attrs.get('scheduler')} with "
                                  f"{_workers(int(ds.attrs.get('workers', 0)))}, {seconds} s after its start"])
    return rows


def render_study_html(ds: xr.Dataset, *, rung_svg: str | None = None) -> str:
    """The page; ``rung_svg`` the figure of every interval against N when the caller drew it already."""
    axes = _axes(ds)
    css = resources.files("emvsbayes.report").joinpath("style.css").read_text(encoding="utf-8")
    title = ds.attrs.get("title") or ds.attrs.get("name", "study")
    spec = json.loads(ds.attrs.get("spec", "{}"))
    ok, failed = int((ds["status"] == 1).sum()), int((ds["status"] == 0).sum())
    # (a study file written before families had titles names the family by its id)
    family = ds.attrs.get("family_title") or f"{ds.attrs.get('family')} models"
    summary = _table(["", ""], [
        ["kind", f"{ds.attrs.get('kind')} study of {family}"],
        ["grid", "; ".join(f"{a}: {', '.join(map(str, ds[a].values.tolist()))}" for a in axes) or "one cell"],
        ["replicates", f"{ds.sizes['replicate']} per cell; {ok} ok, {failed} failed"],
        ["seed", ds.attrs.get("seed")],
        *provenance_rows(ds),
        ["sampling", f"{spec.get('bayes', {}).get('chains')} chains x {spec.get('bayes', {}).get('draws')} draws "
                     f"after {spec.get('bayes', {}).get('tune')} tuning steps"],
    ])
    parts = [_section("Study", summary, "summary")]
    if ok == 0 and failed:
        # Nothing to summarise: empty figures and tables of dashes would hide that; the cells and errors remain.
        parts += [
            _section("No replicate succeeded",
                     f"<p>All {failed} replicates that ran failed, so this study has no coverage, ranks or "
                     "posterior summaries to show. Their errors are under <a href='#failures'>Failed replicates</a>; "
                     "running the study again with the same spec and output folder computes them again.</p>",
                     "nothing"),
            _section("Cells", cell_table(ds, axes) if ds.attrs.get("kind") == "coverage" else "", "cells"),
        ]
    elif ds.attrs.get("kind") == "coverage":
        nominal = ds.attrs.get("nominal")
        parts += [
            _section("Coverage against nominal",
                     f"<p>Share of replicates whose interval holds the true value, nominal {esc(nominal)}; bars are "
                     f"&plusmn;2 Monte Carlo standard errors.</p>{coverage_figure(ds, axes)}", "coverage"),
            _section("Coverage, width and cost by interval",
                     f"<p>Every interval at the same probability {esc(nominal)}, against N: coverage pooled over "
                     f"all parameters and per variable; bars are &plusmn;2 Monte Carlo standard errors "
                     f"(MCSE = sqrt(p(1 - p)/n), n replicates; for a pooled figure an upper bound). The table gives "
                     f"each coverage with its MCSE, the mean interval width and the median seconds per replicate "
                     f"each interval cost (a worker's first replicate of a cell also compiles).</p>"
                     f"{rung_figure(ds, axes) if rung_svg is None else rung_svg}{rung_table(ds, axes)}", "rungs"),
            _section("Bias and RMSE against N", error_figure(ds, axes), "error"),
            _section("Label switching against separation", switching_figure(ds, axes), "switching"),
            _section("ESS per second by sampler", ess_figure(ds, axes), "ess"),
            _section("Cells", cell_table(ds, axes), "cells"),
            _section("Parameters", f"<details><summary>per parameter and cell</summary>{parameter_table(ds, axes)}</details>",
                     "parameters"),
        ]
    else:
        parts += [
            _section("Rank histograms",
                     f"<p>Ranks of the true value among {esc(ds.attrs.get('ranks'))} thinned posterior draws, in "
                     f"{esc(ds.attrs.get('bins'))} bins; the grey band is where 99% of a uniform histogram's bars "
                     f"fall.</p>{rank_histograms(ds, axes)}", "ranks"),
            _section("Uniformity tests",
                     f"<p>Chi-square test per quantity; a cell fails when a p-value is below alpha / (number of "
                     f"quantities), so a correctly sampled model fails with probability about alpha = "
                     f"{esc(ds.attrs.get('alpha'))}.</p>{sbc_table(ds, axes)}", "tests"),
        ]
    parts += [
        _section("Failed replicates", failures(ds, axes), "failures"),
        _section("Time per stage", timing_table(ds), "timings"),
        _section("Spec as run", f"<pre>{esc(json.dumps(spec, indent=2))}</pre>", "spec"),
    ]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<meta name='generator' content='emvsbayes study'>"
            f"<meta name='emvsbayes-results' content='{esc(ds.attrs.get('checksum', ''))}'>"
            f'<title>{esc(title)}</title>'
            f"<style>{css}</style></head><body><header><h1>{esc(title)}</h1>"
            f'<p class="sub">{esc(ds.attrs.get("kind"))} study, {esc(ds.attrs.get("name"))}</p></header>'
            f"<main>{''.join(parts)}</main></body></html>")


def render_study_report(ds: xr.Dataset, path, *, figure_file: bool = True) -> Path:
    """Write the study's HTML page to ``path`` (atomically); a coverage study's figure of every interval
    against N also as ``coverage.svg`` beside it (for pages that cannot inline the report, such as a README)
    unless ``figure_file`` is False (a page written outside the study's folder: the figure is in the page)."""
    # Drawn once for both (the largest figure: a second of the page's few, after the last replicate).
    with drawing():
        figure = rung_figure(ds, _axes(ds)) if ds.attrs.get("kind") == "coverage" else None
        page = render_study_html(ds, rung_svg=figure)
    atomic_write(Path(path), lambda tmp: tmp.write_text(page, encoding="utf-8"))
    if figure_file and ds.attrs.get("kind") == "coverage":
        if figure:
            atomic_write(Path(path).with_name("coverage.svg"), lambda tmp: tmp.write_text(figure, encoding="utf-8"))
    return Path(path)
