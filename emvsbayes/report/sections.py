"""The report's sections. Each is a function of the :class:`Context` returning HTML, or "" when its
data are not in the results file, so the page shows only what the run produced.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import xarray as xr

from emvsbayes.family import percent
from emvsbayes.report import figures
from emvsbayes.report.markup import (
    Raw,
    esc,
    figure,
    fmt,
    fixed,
    decimals_for,
    fmt_interval,
    fmt_rhat,
    group,
    key_value_table,
    paragraph,
    subsection,
    table,
)
from emvsbayes.report.params import (
    SAMPLE_DIMS,
    ParamRow,
    display_draws,
    elements,
    equal_tailed,
    group_parameters,
    interval_prob,
    component_names,
    multimodal,
    parameter_rows,
    posterior_group,
    varying_names,
)
from emvsbayes.report.summary import RHAT_LIMIT, DiagnosticRow, Summary, build_summary, diagnostic_rows, verdict_mark
from emvsbayes.results import root_json

#: tables listing one row per observation are shown up to this many rows
MAX_TABLE_ROWS = 30


@dataclass
class Context:
    """The results tree and what several sections need, computed once."""

    tree: xr.DataTree

    def group(self, name: str) -> xr.Dataset | None:
        return group(self.tree, name)

    @cached_property
    def spec(self) -> dict:
        spec = root_json(self.tree, "spec", {}) or {}
        return spec if isinstance(spec, dict) else {}

    @cached_property
    def prob(self) -> float:
        return interval_prob(self.tree)

    @property
    def pct(self) -> str:
        return percent(self.prob)

    @cached_property
    def params(self) -> list[ParamRow]:
        return parameter_rows(self.tree)

    @cached_property
    def diagnostics(self) -> list[DiagnosticRow]:
        return diagnostic_rows(self.tree) if "posterior" in self.tree.children else []

    @cached_property
    def summary(self) -> Summary:
        return build_summary(self.tree, params=self.params, diagnostics=self.diagnostics)

    @cached_property
    def membership(self) -> tuple[np.ndarray, str] | None:
        """(obs, K) membership probabilities to colour points by, and where they came from."""
        post = self.group("posterior_membership")
        if post is not None and "membership_relabelled" in post:
            return post["membership_relabelled"].values, "posterior membership probabilities (relabelled draws)"
        em = self.group("em")
        if em is not None and "resp" in em:
            return em["resp"].values, "EM responsibilities"
        return None


# --- summary ----------------------------------------------------------------------------------------------


def summary_section(ctx: Context) -> str:
    s = ctx.summary
    verdicts = table(None, [[v.topic, Raw(f'<span class="mark {_mark_class(v.ok)}">{esc(verdict_mark(v))}</span>'),
                                             v.text] for v in s.verdicts], cls="verdicts") if s.verdicts else ""
    if s.warnings:
        items = "".join(f"<li><strong>{esc(f.problem)}</strong><br>What to do: {esc(f.advice)}</li>" for f in s.warnings)
        warnings = f"<h3>Warnings ({len(s.warnings)})</h3><ul class='warnings'>{items}</ul>"
    else:
        warnings = "<p class='ok'>No warnings.</p>"
    return key_value_table(s.facts) + verdicts + warnings


def _mark_class(ok) -> str:
    return {True: "good", False: "bad", None: "na"}[ok]


# --- data -----------------------------------------------------------------------------------------------


def data_section(ctx: Context) -> str:
    data = ctx.group("data")
    if data is None:
        return ""
    if "heads" in data:
        return _coin_table(data)
    if "x" in data and data.attrs.get("kind") == "counts":
        return _count_data(ctx, data)
    if "x" in data:
        return _continuous_data(ctx, data)
    return ""


def family_sections(ctx: Context) -> list[tuple[str, str, str, str]]:
    """The sections the results' own family adds to the page (the optional protocol member
    ``report_sections``, :mod:`emvsbayes.family`), as (anchor, title, anchor it follows, HTML); [] when the
    family has none. The family returns records drawn from the tree; escaping and SVG are done here."""
    from emvsbayes.family import ReportFigure, ReportTable, get_family

    try:
        family = get_family(str(ctx.tree.attrs.get("family", "")))
    except KeyError:
        return []
    member = getattr(family, "report_sections", None)
    if member is None:
        return []
    out = []
    for record in member(ctx.tree, ctx.prob, figures.COLORS):
        parts = []
        for block in record.blocks:
            if isinstance(block, ReportFigure):
                html = figure(figures.to_svg(block.figure), block.name, block.caption)
                parts.append(html.replace('class="fig"', 'class="fig wide"', 1) if block.wide else html)
            elif isinstance(block, ReportTable):
                parts.append((paragraph(block.caption) if block.caption else "") + table(list(block.header), block.rows))
            else:
                parts.append(paragraph(block.text))
        out.append((record.anchor, record.title, record.after, "".join(parts)))
    return out


def _coin_table(data: xr.Dataset) -> str:
    truth = "true_component" in data
    names = json.loads(data.attrs["component_labels"]) if "component_labels" in data.attrs else []
    coin = (lambda c: names[c] if 0 <= c < len(names) else c)
    rows = [[label, int(h), int(n)] + ([coin(int(data["true_component"].values[i]))] if truth else [])
            for i, (label, h, n) in enumerate(zip(data["set"].values, data["heads"].values, data["tosses"].values))]
    return table(["set", "heads", "tosses"] + (["true coin"] if truth else []), rows)


def _continuous_data(ctx: Context, data: xr.Dataset) -> str:
    x = np.asarray(data["x"].values, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n, d = x.shape
    features = [str(f) for f in data["feature"].values] if "feature" in data.coords else [f"x{j}" for j in range(d)]
    membership = ctx.membership
    probs, source = (membership if membership is not None and membership[0].shape[0] == n else (None, ""))
    em = ctx.group("em")
    centres = np.asarray(em["mu"].values).reshape(-1, d) if em is not None and "mu" in em else None
    shown = f"; {figures.MAX_POINTS} of the {n} points drawn" if n > figures.MAX_POINTS else ""
    colour = f"Points coloured by {source}" if probs is not None else "Points"
    if d == 1:
        svg = figures.histogram_1d(x[:, 0], probs, features[0], _em_densities_1d(em, x[:, 0]))
        caption = f"{colour} (rug){shown}; lines: EM's weighted component densities."
    elif d == 2:
        em_ellipses, draw_ellipses, n_draws = _ellipses(ctx, em, d)
        svg = figures.scatter_2d(x, probs, (features[0], features[1]), centres, em_ellipses, draw_ellipses)
        caption = f"{colour}{shown}; crosses: EM's component means."
        if em_ellipses is not None:
            caption += (f" Ellipses: each component's covariance drawn at {figures.ELLIPSE_SDS:g} standard deviations "
                        "(about 86% of its points), thick for EM's answer"
                        + (f", thin for {n_draws} posterior draws (relabelled, so each colour is one component), "
                           "whose spread is the posterior's uncertainty about shape and place" if n_draws else "") + ".")
    elif d <= 4:
        svg = figures.pair_plot(x, probs, features, centres)
        caption = f"Every pair of features. {colour}{shown}; crosses: EM's component means."
    else:
        rows = [str(v) for v in data["obs"].values] if "obs" in data.coords else []
        # numbered rows carry no name worth writing on the figure
        names = rows if rows and not all(r.lstrip("-").isdigit() for r in rows) else None
        svg = figures.projection(x, probs, centres, names)
        caption = f"The data projected on their first two principal components. {colour}{shown}."
        if names is not None and n <= figures.MAX_NAMED_POINTS:
            caption += " Each point carries its row's name (a thin line joins a name set further off to its point)."
    transforms = _as_text(data.attrs.get("transforms") or "")
    notes = paragraph(f"Source: {data.attrs.get('source', '?')}; {n} observations, {d} feature{'s' if d > 1 else ''} "
                      f"({', '.join(features)}).")
    if transforms:
        notes += paragraph(f"Preprocessing: {transforms}.")
    return notes + figure(svg, "data", caption)


#: posterior draws whose covariance ellipses are drawn over the data
ELLIPSE_DRAWS = 40


def _ellipses(ctx: Context, em: xr.Dataset | None, d: int):
    """(EM's means and covariances, a few posterior draws' means and covariances, how many draws) for the
    2-D data figure; ``None`` where the results hold no covariances."""
    def full(ds: xr.Dataset, sample_dims: tuple[str, ...]):
        if "mu" not in ds or "cov" not in ds or "feature_bis" not in ds["cov"].dims:
            return None
        mu = ds["mu"].transpose(*sample_dims, "component", "feature").values
        cov = ds["cov"].transpose(*sample_dims, "component", "feature", "feature_bis").values
        return mu, cov

    em_part = full(em, ()) if em is not None else None
    draws, _ = posterior_group(ctx.tree)
    draw_part, n = None, 0
    if em_part is not None and draws is not None and "chain" in draws.dims:
        stacked = draws.stack(sample=("chain", "draw"))
        picked = figures.thin_indices(stacked.sizes["sample"], ELLIPSE_DRAWS)
        found = full(stacked.isel(sample=picked), ("sample",))
        if found is not None and found[0].shape[-1] == d:
            draw_part, n = found, len(picked)
    return em_part, draw_part, n


#: The most counts at which the report draws EM's component probabilities.
COUNT_GRID = 2000


def _count_data(ctx: Context, data: xr.Dataset) -> str:
    """Counts (one per row): their histogram with one bar per count, a rug coloured by membership, and EM's
    weighted component probabilities (Poisson, the model of count data here) at each count."""
    x = np.asarray(data["x"].values, dtype=float)
    n = x.size
    membership = ctx.membership
    probs, source = (membership if membership is not None and membership[0].shape[0] == n else (None, ""))
    column = str(data.attrs.get("column") or "count")
    em = ctx.group("em")
    densities = None
    if em is not None and "rate" in em and "w" in em:
        from scipy.stats import poisson

        top = int(x.max()) + 1
        # one point per count, or (counts in the millions) about 2,000 counts spread over the range: a grid
        # of every count up to 10**9 would need gigabytes
        grid = np.arange(0, top + 1) if top <= COUNT_GRID else np.unique(np.linspace(0, top, COUNT_GRID).round())
        rate, w = np.asarray(em["rate"].values, dtype=float), np.asarray(em["w"].values, dtype=float)
        densities = grid, w[:, None] * poisson.pmf(grid[None, :], rate[:, None])
    width = max(1, int(np.ceil((x.max() - x.min() + 1) / 60)))  # one bar per count, up to 60 bars
    bins = np.arange(x.min() - 0.5, x.max() + width + 0.5, width)
    colour = f"Rows coloured by {source}" if probs is not None else "Rows"
    svg = figures.histogram_1d(x, probs, column, densities, bins=bins, ylabel="share of rows")
    caption = (f"{colour} (rug); lines: EM's weighted component probabilities of each count, dashed: their sum."
               if densities is not None else f"{colour} (rug).")
    notes = paragraph(f"Source: {data.attrs.get('source', '?')}; "
                      + (f"{n} counts ({column}), from {int(x.min())} to {int(x.max())}, mean {x.mean():.4g}, variance "
                         f"{x.var(ddof=1):.4g}." if n > 1 else f"one count ({column}): {int(x[0])}, so no variance."))
    return notes + figure(svg, "data", caption)


def _as_text(value) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip()[:1] in ("[", '"') else value
        except json.JSONDecodeError:
            return value
        if isinstance(value, str):
            return value
    return "; ".join(map(str, value)) if isinstance(value, (list, tuple, np.ndarray)) else str(value)


def _em_densities_1d(em: xr.Dataset | None, x: np.ndarray):
    if em is None or "mu" not in em or "w" not in em:
        return None
    mu = np.asarray(em["mu"].values, dtype=float).reshape(-1)
    if "sigma" in em:
        sd = np.asarray(em["sigma"].values, dtype=float).reshape(-1)
    elif "cov" in em:
        sd = np.sqrt(np.asarray(em["cov"].values, dtype=float).reshape(len(mu), -1)[:, 0])
    else:
        return None
    w = np.asarray(em["w"].values, dtype=float).reshape(-1)
    pad = 0.1 * (x.max() - x.min() + 1e-12)
    grid = np.linspace(x.min() - pad, x.max() + pad, 300)
    dens = w[:, None] * np.exp(-0.5 * ((grid[None] - mu[:, None]) / sd[:, None]) ** 2) / (sd[:, None] * np.sqrt(2 * np.pi))
    return grid, dens


# --- EM -------------------------------------------------------------------------------------------------


def em_section(ctx: Context) -> str:
    trace = ctx.group("em_trace")
    # coin runs show their step-by-step tables in the lesson's order, in lesson.lesson_section
    parts = [_loglik_paths(ctx, trace), _parameter_paths(_named_components(ctx, trace)), _restarts(ctx), _optima(ctx)]
    return "".join(parts)


def _named_components(ctx: Context, ds: xr.Dataset | None) -> xr.Dataset | None:
    """``ds`` with its ``component`` coordinate replaced by the names the spec gave (``[model] labels``)."""
    data = ctx.group("data")
    if ds is None or "component" not in ds.dims or data is None or "component_labels" not in data.attrs:
        return ds
    return ds.assign_coords(component=component_names(ctx.tree, ds.sizes["component"]))


def _component_name(ctx: Context, index: int) -> str:
    """Component ``index`` by the name the spec gave it, else the index."""
    return _named_label(ctx, f"c[{index}]")[2:-1]


def _named_label(ctx: Context, label: str) -> str:
    """``theta[0]`` as ``theta[A]`` when the spec named the components (labels written as name[index])."""
    data, em = ctx.group("data"), ctx.group("em")
    if data is None or em is None or "component_labels" not in data.attrs or "component" not in em.sizes:
        return label
    names = component_names(ctx.tree, em.sizes["component"])
    return re.sub(r"^(\w+)\[(\d+)\]$", lambda m: f"{m.group(1)}[{names[int(m.group(2))]}]"
                  if int(m.group(2)) < len(names) else m.group(0), label)


def _loglik_paths(ctx: Context, trace: xr.Dataset | None) -> str:
    paths = []
    restarts = ctx.group("em_restarts")
    path_var = next((v for v in ("loglik_path", "loglik_trace") if restarts is not None and v in restarts), None)
    if path_var is not None:
        for r, values in zip(restarts["restart"].values, restarts[path_var].values):
            values = np.asarray(values, dtype=float)
            paths.append((f"restart {r}", values[np.isfinite(values)]))
    elif trace is not None:
        paths.append(("soft EM (best start)", trace["loglik"].values))
    hard = ctx.group("em_hard_trace")
    if hard is not None and path_var is None:
        paths.append(("hard EM (classification log-likelihood)", hard["loglik"].values))
    if not paths:
        return ""
    # A run that started at its optimum is a flat line with nothing to read; draw the runs that moved.
    moving = [(label, values) for label, values in paths if figures.moved(values)]
    still = [label for label, values in paths if not figures.moved(values)]
    if not moving:
        return subsection("Log-likelihood per iteration", paragraph(
            f"Nothing to draw: {_join_labels(still)} started at {'its' if len(still) == 1 else 'their'} optimum "
            "(the start already was a fixed point of EM), so the log-likelihood did not change between iterations."))
    caption = ("Log-likelihood per iteration of every restart that moved." if path_var else
               "Log-likelihood per iteration; soft EM never decreases it.")
    if still:
        caption += f" Not drawn, because they started at their optimum and stayed there: {_join_labels(still)}."
    return subsection("Log-likelihood per iteration", figure(figures.loglik_paths(moving), "em-loglik", caption))


def _join_labels(labels: list[str], limit: int = 8) -> str:
    return ", ".join(labels[:limit]) + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def _parameter_paths(trace: xr.Dataset | None) -> str:
    if trace is None:
        return ""
    values, labels = {}, {}
    for name in varying_names(trace):
        shown = display_draws(trace[[name]].rename(iteration="draw").expand_dims("chain"), max_draws=10**9)
        for var in shown.data_vars:
            da = shown[var].isel(chain=0)
            values[var] = da.values
            labels[var] = [label for label, _ in elements(da.rename(draw="iteration"))]
    if not values:
        return ""
    return subsection("Parameter paths", figure(figures.parameter_paths(values, labels), "em-parameters",
                                                "Each parameter per iteration of the best run" + (" (covariances by their variances)." if "variance" in values else ".")))


#: a parameter of more numbers than this is not written out per restart or optimum (the comparison table has it)
MAX_INLINE_NUMBERS = 8


def _inline(values: np.ndarray, places: int) -> str:
    """A parameter of one restart as text: a vector as "a, b", a matrix (component x feature) row by row."""
    values = np.atleast_1d(np.asarray(values, dtype=float))
    if values.ndim >= 2:
        return "; ".join("(" + ", ".join(fixed(v, places) for v in row.ravel()) + ")" for row in values)
    return ", ".join(fixed(v, places) for v in values)


def _restarts(ctx: Context) -> str:
    restarts = ctx.group("em_restarts")
    if restarts is None:
        return ""
    optima = ctx.group("em_optima")
    optimum = optima["optimum_of_restart"].values if optima is not None and "optimum_of_restart" in optima else None
    start = restarts["init_loglik"].values if "init_loglik" in restarts else None
    fig = figure(figures.restart_outcomes(start, restarts["loglik"].values, optimum), "em-restarts",
                 "Each restart's log-likelihood at its start (hollow) and where it stopped (filled, coloured by the optimum reached).")
    best = restarts.attrs.get("best_restart")
    note = f"The reported EM answer is restart {best}." if best is not None else ""
    n = restarts.sizes["restart"]
    if n > MAX_TABLE_ROWS:
        # one row per restart would be a page of near-identical rows: the figure shows each, the optima table groups them
        return subsection("Every restart", fig, note + f" {n} restarts: each is a point of the figure; the table of "
                          "distinct optima below groups them by the answer they reached.")
    # The first parameter the results declare other than the weights: theta, mu, or a new family's own.
    name = next((n for n in group_parameters(restarts) if n != "w"), None)
    show_values = name is not None and restarts[name].isel(restart=0).size <= MAX_INLINE_NUMBERS
    places = decimals_for(restarts[name].values) if show_values else None
    ll_places = decimals_for(restarts["loglik"].values, 8)
    rows = [[int(r), fixed(restarts["loglik"].values[i], ll_places), int(restarts["n_iter"].values[i]),
             "yes" if restarts["converged"].values[i] else "no"]
            + ([int(optimum[i])] if optimum is not None else [])
            + ([_inline(restarts[name].values[i], places)] if show_values else [])
            for i, r in enumerate(restarts["restart"].values)]
    header = (["restart", "log-likelihood", "iterations", "converged"] + (["optimum"] if optimum is not None else [])
              + ([_PARAMETER_WORDS.get(name, name)] if show_values else []))
    return subsection("Every restart", fig + table(header, rows), note)


#: how the page names a parameter where a header shows it alone
_PARAMETER_WORDS = {"theta": "theta (chance of heads per coin)", "mu": "mu (component means)", "w": "w (weights)",
                    "sigma": "sigma (standard deviations)"}



def _optima(ctx: Context) -> str:
    optima = ctx.group("em_optima")
    if optima is None:
        return ""
    restarts = ctx.group("em_restarts")
    # short parameters written out; a long one (36 means) is in the comparison table for the reported optimum
    names = [n for n in (varying_names(restarts) if restarts is not None else [])
             if n != "cov" and restarts[n].isel(restart=0).size <= MAX_INLINE_NUMBERS]
    ll_places = decimals_for(optima["loglik"].values, 8)
    rows = []
    for i in range(optima.sizes["optimum"]):
        row = [i, fixed(optima["loglik"].values[i], ll_places), int(optima["count"].values[i])]
        if "representative" in optima and names:
            rep = int(optima["representative"].values[i])
            # the components in the order this restart found them: other restarts of the optimum may name them otherwise
            row.append(f"restart {int(restarts['restart'].values[rep])}: "
                       + "; ".join(f"{n} = " + _inline(restarts[n].values[rep], decimals_for(restarts[n].values))
                                   for n in names))
        rows.append(row)
    header = (["optimum", "log-likelihood", "restarts reaching it"]
              + (["parameters"] if names and "representative" in optima else []))
    note = ("Restarts that reached the same answer up to renaming the components count as one optimum; its "
            "parameters are given as its best restart found them, in that restart's component order. "
            + ("Only one optimum was found." if len(rows) == 1 else "EM reports the best; the others are local maxima it can get stuck in."))
    return subsection("Distinct local optima", table(header, rows), note)


def _coin_steps(trace: xr.Dataset, data: xr.Dataset, max_rows: int = 12, names: list[str] | None = None) -> str:
    """The lesson's table: for each iteration, each set's responsibilities and the coins' expected counts."""
    k = trace.sizes["component"]
    names = names or [str(c) for c in range(k)]
    n_iter = trace.sizes["iteration"]
    shown = list(range(min(n_iter, max_rows)))
    if n_iter > max_rows:
        shown[-1] = n_iter - 1
    blocks = []
    header = ["set", "seen"] + [f"P(coin {names[c]})" for c in range(k)] + [f"coin {names[c]} made" for c in range(k)]
    for it in shown:
        theta, w, resp = trace["theta"].values[it], trace["w"].values[it], trace["resp"].values[it]
        rows = []
        for i, label in enumerate(data["set"].values):
            h, n = int(data["heads"].values[i]), int(data["tosses"].values[i])
            rows.append([label, f"{h} H, {n - h} T"] + [fixed(resp[i, c], 3) for c in range(k)]
                        + [f"{fixed(resp[i, c] * h, 2)} H, {fixed(resp[i, c] * (n - h), 2)} T" for c in range(k)])
        eh, et = trace["expected_heads"].values[it], trace["expected_tails"].values[it]
        rows.append(["total", ""] + [""] * k + [f"{fixed(eh[c], 2)} H, {fixed(et[c], 2)} T" for c in range(k)])
        caption = (f"Iteration {it}: E-step at " + ", ".join(f"theta_{names[c]} = {fixed(t, 4)}" for c, t in enumerate(theta))
                   + f" (weights {', '.join(fixed(x, 3) for x in w)}), log-likelihood {fixed(trace['loglik'].values[it], 6)}")
        if it + 1 < n_iter:
            nxt = trace["theta"].values[it + 1]
            caption += ". M-step: theta = heads / (heads + tails) each coin made: " + ", ".join(
                f"theta_{names[c]} = {fixed(eh[c], 2)} / {fixed(eh[c] + et[c], 2)} = {fixed(nxt[c], 4)}" for c in range(k))
        blocks.append(f"<details{' open' if it < 2 else ''}><summary>{esc(caption)}</summary>{table(header, rows)}</details>")
    if n_iter > max_rows:
        blocks.insert(-1, f"<p>… iterations {max_rows - 1} to {n_iter - 2} left out …</p>")
    return "".join(blocks)


# --- Bayes ------------------------------------------------------------------------------------------------


def bayes_section(ctx: Context) -> str:
    posterior = ctx.group("posterior")
    if posterior is None:
        return ""
    return _joint_posterior(ctx, posterior) + _trace_and_rank(ctx, posterior) + _diagnostics(ctx)


def _pair_variable(posterior: xr.Dataset) -> str | None:
    for name in ("theta", "mu"):
        if name in posterior and posterior.sizes.get("component", 0) >= 2 and np.ptp(posterior[name].values) > 0:
            return name
    return None


def _first_feature(da: xr.DataArray) -> xr.DataArray:
    return da.isel({d: 0 for d in da.dims if d not in ("chain", "draw", "component", "restart")})


def _joint_posterior(ctx: Context, posterior: xr.Dataset) -> str:
    name = _pair_variable(posterior)
    if name is None:
        return ""
    da = _first_feature(posterior[name]).isel(component=[0, 1]).transpose("chain", "draw", "component")
    draws = da.values.reshape(-1, 2)
    chains = np.repeat(np.arange(da.sizes["chain"]), da.sizes["draw"])
    points = []
    soft = ctx.group("em")
    for label, group_name in (("EM", "em"), ("hard EM", "em_hard")):
        est = ctx.group(group_name)
        if est is not None and name in est:
            if group_name == "em_hard" and soft is not None and name in soft:
                # hard EM may end on the mirror labelling: renamed to match soft EM's, so its mark sits beside
                # soft EM's instead of on the far side of the diagonal
                order = _matching_order(soft[name].values, est[name].values)
                est = est.isel(component=order)
            points.append((label, _first_feature(est[name]).isel(component=[0, 1]).values))
    exact = ctx.group("exact")
    contour = ((exact["grid_x"].values, exact["grid_y"].values, exact["joint_density"].values)
               if name == "theta" and exact is not None and "joint_density" in exact else None)
    feature = ""
    if name == "mu" and "feature" in posterior[name].dims:
        feature = f", {posterior['feature'].values[0]}" if "feature" in posterior.coords else ", 0"
    names = component_names(ctx.tree, posterior.sizes["component"])
    labels = (f"{name}[{names[0]}{feature}]", f"{name}[{names[1]}{feature}]")
    limits = (0.0, 1.0) if name == "theta" else None
    svg = figures.joint_pair(draws, chains, points, labels, limits=limits, contour=contour)
    note = ("Raw draws (before relabelling), coloured by chain. Filled marks are EM's answers, hollow ones the same "
            f"answers with components {names[0]} and {names[1]} renamed: the likelihood is identical there, so a symmetric posterior has a "
            "mode at each. Chains that visit both sides are switching labels.")
    return subsection(f"Joint posterior of {labels[0]} and {labels[1]}", figure(svg, "joint", ""), note)


#: most scalar parameters drawn in one trace or rank plot; beyond it the ones with the highest R-hat are drawn
MAX_PANELS = 12


def _worst_panels(shown: xr.Dataset, limit: int = MAX_PANELS) -> tuple[xr.Dataset, str]:
    """``shown``, or when it holds more than ``limit`` scalar parameters, the ``limit`` with the highest
    R-hat (one variable each, named by its label) and a sentence saying which and why."""
    import arviz_stats

    scalars = []
    for name in shown.data_vars:
        da = shown[name].transpose("chain", "draw", ...)
        for label, where in elements(da):
            scalars.append((label, da.isel(where).values))
    if len(scalars) <= limit:
        return shown, ""
    stacked = xr.DataArray(np.stack([v for _, v in scalars], axis=-1), dims=("chain", "draw", "scalar"))
    from emvsbayes.labels.xarray import constant_elements_quiet

    with constant_elements_quiet():
        rhat = np.asarray(arviz_stats.rhat(stacked).values, dtype=float)
    order = np.argsort(-np.where(np.isfinite(rhat), rhat, -np.inf), kind="stable")[:limit]
    # one variable per panel, named by its label; a DataTree variable name cannot hold "/" (from a column name)
    subset = xr.Dataset({scalars[i][0].replace("/", "\u2215"): (("chain", "draw"), scalars[i][1]) for i in order},
                        coords={"chain": shown["chain"].values, "draw": shown["draw"].values})
    picked = ", ".join(f"{scalars[i][0]} ({fmt(rhat[i], 4)})" for i in order)
    return subset, (f" {len(scalars)} scalar parameters are too many to draw readably: shown are the {limit} with the "
                    f"highest R-hat, where chains disagreeing would show first: {picked}. The rest are in the "
                    "diagnostics table.")


def _matching_order(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The order of ``other``'s components (first axis) closest to ``reference``'s: ``other[order]`` lines up."""
    from scipy.optimize import linear_sum_assignment

    ref = np.asarray(reference, dtype=float).reshape(len(reference), -1)
    oth = np.asarray(other, dtype=float).reshape(len(other), -1)
    cost = ((ref[:, None, :] - oth[None, :, :]) ** 2).sum(axis=-1)
    _, order = linear_sum_assignment(cost)
    return order


def _trace_and_rank(ctx: Context, posterior: xr.Dataset) -> str:
    import arviz as az

    sets = [("before relabelling", posterior)]
    relabelled, is_relabelled = posterior_group(ctx.tree)
    if is_relabelled:
        sets.append(("after relabelling", relabelled))
    parts = []
    for when, ds in sets:
        shown = display_draws(ds)
        if not shown.data_vars:
            continue
        shown = _named_components(ctx, shown)  # arviz labels panels by coordinate: the components' names
        thin = shown.sizes["draw"] < ds.sizes["draw"]
        # a trace panel is a row of the page, a rank panel a quarter of one: fewer traces than ranks
        trace_shown, trace_note = _worst_panels(shown, MAX_PANELS // 3)
        shown, subset_note = _worst_panels(shown, MAX_PANELS)
        small = xr.DataTree.from_dict({"posterior": shown})
        note = f" (one draw in {int(np.ceil(ds.sizes['draw'] / shown.sizes['draw']))} shown)" if thin else ""
        cov_note = "; covariances by their variances" if "variance" in shown else ""
        slug = when.split()[0]
        parts.append(subsection(f"Trace, {when}", figure(
            figures.arviz_figure(az.plot_trace_dist, xr.DataTree.from_dict({"posterior": trace_shown}),
                                 what="The trace plot", row_height=1.45), f"trace-{slug}",
            f"Left: each chain's density of the parameter; right: its value per draw{note}{cov_note}. "
            f"Chains that overlap sample the same posterior.{trace_note}")))
        parts.append(subsection(f"Rank plots, {when}", figure(
            figures.arviz_figure(az.plot_rank, small, row_height=1.8, what="The rank plot", ylabel="ECDF minus uniform",
                                 visuals={"remove_axis": False}, marker_size=6),
            f"rank-{slug}",
            "Each chain's draws are ranked among all chains' draws; a line is one chain's empirical distribution "
            "of its fractional ranks minus the uniform one (x: fractional rank, y: the difference). If every chain "
            "samples the same posterior the lines wander close to zero; a chain whose line runs far above or below "
            "the others sits in a different part of the posterior. The p above each panel is ArviZ's multi-chain "
            f"uniformity test at level {figures.RANK_ALPHA:g}, given to two decimals (red: below it, the chains differ; "
            f"p ≈ {figures.RANK_ALPHA:g}: too close to the level to tell); points that test flags are marked"
            f"{note}.{subset_note}")))
    return "".join(parts)


def _diagnostics(ctx: Context) -> str:
    rows = ctx.diagnostics
    if not rows:
        return ""
    posterior = ctx.group("posterior")
    n_chains = posterior.sizes.get("chain", 1)
    relabelled = any(np.isfinite(r.rhat_relabelled) for r in rows)
    header = ["parameter", "R-hat", "bulk ESS", "tail ESS"] + (["R-hat relabelled", "bulk ESS relabelled"] if relabelled else [])
    # the raw bulk ESS is held to the limit only when it is the one to read (no relabelled columns beside it)
    body = [[_named_label(ctx, r.label), _rhat_cell(r.rhat), _ess_cell(r.ess_bulk, None if relabelled else 100 * n_chains),
             _ess_cell(r.ess_tail)]
            + ([_rhat_cell(r.rhat_relabelled), _ess_cell(r.ess_relabelled, 100 * n_chains)]
               if relabelled else []) for r in rows]
    body, summarised = _worst_rows(body, [r.rhat_relabelled if relabelled else r.rhat for r in rows])
    stats = ctx.group("sample_stats")
    extra = ""
    if stats is not None and "diverging" in stats:
        per_chain = np.asarray(stats["diverging"].values, dtype=float).sum(axis=-1).astype(int)
        extra += paragraph(f"Divergent transitions per chain: {', '.join(map(str, per_chain))}.")
    if stats is not None and "step_size" in stats:
        extra += paragraph("Step size per chain (last draw): " + ", ".join(fmt(np.asarray(v).ravel()[-1], 3) for v in stats["step_size"].values) + ".")
    note = ("R-hat above 1.01 or bulk ESS below 100 per chain is marked. Under label switching the raw "
            "R-hat is high by construction; the relabelled columns are the ones to read (so only their ESS is "
            "marked: the same number in the raw column is not)." if relabelled else
            "R-hat above 1.01 or bulk ESS below 100 per chain is marked.")
    modes = multimodal(ctx.tree)
    if modes is not None:
        note += (f" Here the chains sit in {modes.sizes['mode']} distinct modes, so even the relabelled columns "
                 "compare chains of different modes: R-hat and ESS within each mode are in the label-switching "
                 "section's per-mode table.")
    return subsection("Sampler diagnostics", table(header, body) + extra, note + summarised)


def _flag(text: str, bad: bool) -> Raw | str:
    return Raw(f'<span class="bad">{esc(text)}</span>') if bad else text


def _rhat_cell(value: float) -> Raw | str:
    """R-hat to enough digits to see why it is marked (see :func:`fmt_rhat`), marked above 1.01."""
    return _flag(fmt_rhat(value, RHAT_LIMIT), bool(np.isfinite(value) and value > RHAT_LIMIT))


def _ess_cell(value: float, limit: float | None = None) -> Raw | str:
    """An effective sample size as a whole number, marked below ``limit``."""
    text = f"{value:.0f}" if np.isfinite(value) else "–"
    return _flag(text, bool(limit is not None and np.isfinite(value) and value < limit))


#: diagnostics tables longer than this show the parameters with the highest R-hat and say how many are left out
MAX_DIAGNOSTIC_ROWS = 12


def _worst_rows(body: list[list], rhat: list[float], limit: int = MAX_DIAGNOSTIC_ROWS) -> tuple[list[list], str]:
    """``body``, or its ``limit`` rows of highest R-hat (page order kept) and a sentence on the rest."""
    if len(body) <= limit:
        return body, ""
    values = np.asarray(rhat, dtype=float)
    keep = np.sort(np.argsort(-np.where(np.isfinite(values), values, -np.inf), kind="stable")[:limit])
    rest = np.setdiff1d(np.arange(len(body)), keep)
    worst_rest = np.nanmax(values[rest]) if np.isfinite(values[rest]).any() else float("nan")
    return [body[i] for i in keep], (f" Shown: the {limit} of {len(body)} parameters with the highest R-hat (of the draws the verdict reads); the other "
                                     f"{len(rest)} have R-hat at most {fmt_rhat(worst_rest)}.")


# --- comparison ---------------------------------------------------------------------------------------------


def comparison_section(ctx: Context) -> str:
    rows = ctx.params
    if not rows:
        return ""
    return "".join([_forest(ctx, rows), _comparison_table(ctx, rows), _sorted_thetas(ctx), _membership(ctx),
                    _truth_agreement(ctx), _model_choice(ctx)])


def _sources(ctx: Context, rows: list[ParamRow]) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    em = np.array([r.em for r in rows])
    sources = []
    wald = np.array([r.wald for r in rows])
    if np.isfinite(wald).any():
        sources.append((f"EM, Wald {ctx.pct}", em, wald))
    boot = np.array([r.bootstrap for r in rows])
    if np.isfinite(boot).any():
        sources.append((f"EM, bootstrap {ctx.pct}", em, boot))
    if not sources:
        sources.append(("EM", em, None))
    post = np.array([r.post_eti for r in rows])
    if np.isfinite(post).any():
        sources.append((f"posterior mean, {ctx.pct} interval", np.array([r.post_mean for r in rows]), post))
    return sources


def _distinct_rows(rows: list[ParamRow]) -> tuple[list[ParamRow], int]:
    """``rows`` without the ones that repeat another row of the same component (a spherical covariance's
    equal variances, one per feature) or are a covariance's constant zeros (off a spherical or diagonal
    covariance's diagonal): they carry nothing a reader needs, and for 3 spherical 12 x 12 covariances they
    were 228 of 270 rows. Returns the rows kept and how many were left out."""
    kept, first, repeats = [], {}, {}
    for r in rows:
        index = r.label.partition("[")[2].rstrip("]").split(",")
        values = (r.em, r.post_mean, r.post_sd, r.se, *r.post_eti, *r.wald, *r.bootstrap)
        key = (r.name, index[0].strip(), tuple(round(v, 12) if np.isfinite(v) else None for v in values))
        if r.name == "cov" and (r.fixed and r.em == 0):
            continue
        if r.name == "cov" and key in first:
            repeats[first[key]] = repeats.get(first[key], 0) + 1
            continue
        first[key] = len(kept)
        kept.append(r)
    for i, count in repeats.items():  # a variance shared by every feature is named as one
        kept[i] = replace(kept[i], label=f"variance[{kept[i].label.partition('[')[2].split(',')[0].strip()}] "
                                         f"(every feature)")
    return kept, len(rows) - len(kept)


#: The most rows the interval figure draws of one parameter (a mean or covariance of many columns has hundreds:
#: a 200-column full covariance drew a figure thousands of inches high); the table below it lists them all.
FOREST_ROWS_PER_PARAMETER = 24


def _forest(ctx: Context, rows: list[ParamRow]) -> str:
    varying = [r for r in _distinct_rows(rows)[0] if not r.fixed]
    if not varying:
        return ""
    counts: dict[str, int] = {}
    for r in varying:
        counts[r.name] = counts.get(r.name, 0) + 1
    drawn, seen = [], dict.fromkeys(counts, 0)
    for r in varying:
        seen[r.name] += 1
        if seen[r.name] <= FOREST_ROWS_PER_PARAMETER:
            drawn.append(r)
    cut = [f"{FOREST_ROWS_PER_PARAMETER} of {count:,} {name}" for name, count in counts.items()
           if count > FOREST_ROWS_PER_PARAMETER]
    varying = drawn
    sources = _sources(ctx, varying)
    _, relabelled = posterior_group(ctx.tree)
    modes = multimodal(ctx.tree)
    caption = "; ".join(name for name, _, _ in sources) + (
        " (relabelled draws" + (f", mode {int(modes.attrs.get('main_mode', 0))} only" if modes is not None else "")
        + ")." if relabelled else ".") + (" Points are estimates, bars equal-tailed intervals."
                                         if any(interval is not None for _, _, interval in sources)
                                         else " Points are EM's estimates; this run computed no intervals.")
    if cut:
        caption += (f" Drawn: the first {', the first '.join(cut)} rows, in the table's order; the table below lists "
                     "every row.")
    return figure(figures.forest([r.label for r in varying], sources), "forest", caption)


def _comparison_table(ctx: Context, rows: list[ParamRow]) -> str:
    _, relabelled = posterior_group(ctx.tree)
    # Every number of a row to the same decimals (4 significant digits of the row's estimate): a row reads
    # across, EM against the posterior, and 0.5000 beside 0.7968 shows the same precision.
    places = {r.label: decimals_for([r.em, r.post_mean, r.exact_mean]) for r in rows}

    def num(r: ParamRow, value) -> str:
        return fixed(value, places[r.label])

    def span(r: ParamRow, interval) -> str:
        lo, hi = interval
        return "–" if not (np.isfinite(lo) and np.isfinite(hi)) else f"{num(r, lo)} – {num(r, hi)}"

    columns = [
        ("EM", lambda r: num(r, r.em), True),
        ("EM se", lambda r: num(r, r.se), any(np.isfinite(r.se) for r in rows)),
        (f"Wald {ctx.pct}", lambda r: span(r, r.wald), any(np.isfinite(r.wald[0]) for r in rows)),
        (f"bootstrap {ctx.pct}", lambda r: span(r, r.bootstrap), any(np.isfinite(r.bootstrap[0]) for r in rows)),
        ("posterior mean", lambda r: num(r, r.post_mean), any(np.isfinite(r.post_mean) for r in rows)),
        ("posterior sd", lambda r: "fixed" if r.fixed else num(r, r.post_sd), any(np.isfinite(r.post_mean) for r in rows)),
        (f"{ctx.pct} equal-tailed", lambda r: span(r, r.post_eti), any(np.isfinite(r.post_eti[0]) for r in rows)),
        (f"{ctx.pct} HDI", lambda r: span(r, r.post_hdi), any(np.isfinite(r.post_hdi[0]) for r in rows)),
        # exact summaries are of the unlabelled posterior: beside relabelled draws they would mislead
        ("exact mean", lambda r: num(r, r.exact_mean), not relabelled and any(np.isfinite(r.exact_mean) for r in rows)),
        ("exact sd", lambda r: num(r, r.exact_sd), not relabelled and any(np.isfinite(r.exact_sd) for r in rows)),
        ("EM inside", lambda r: {True: "yes", False: Raw('<span class="bad">no</span>'), None: ""}[r.em_in_posterior],
         any(r.em_in_posterior is not None for r in rows)),
    ]
    shown = [(h, f) for h, f, present in columns if present]
    rows, left_out = _distinct_rows(rows)
    places.update({r.label: decimals_for([r.em, r.post_mean, r.exact_mean]) for r in rows})
    body = [[r.label] + [f(r) for _, f in shown] for r in rows]
    if not any(np.isfinite(r.post_mean) for r in rows):
        note = "No posterior was sampled in this run ([bayes] enabled = false): EM's estimates only."
    else:
        note = ("Posterior columns summarise the relabelled draws (put in EM's labelling), so each row is one component."
                if relabelled else "Posterior columns summarise the raw draws.")
    modes = multimodal(ctx.tree)
    if modes is not None:
        main = int(modes.attrs.get("main_mode", 0))
        note += (f" The chains sit in {modes.sizes['mode']} distinct modes: the posterior columns summarise mode {main} "
                 f"only ({float(modes['share'].values[main]):.0%} of the chains); every mode is in the per-mode table "
                 "of the label-switching section.")
    info = ctx.group("em_information")
    if info is not None and info.attrs.get("reason"):
        note += f" Observed information: {info.attrs['reason']}."
    if info is not None and any(h == f"Wald {ctx.pct}" for h, _ in shown):
        note += " " + _wald_scale_note(info)
    if left_out:
        note += (f" {left_out} covariance entries are left out: the constant zeros off the diagonal and, for a "
                 "spherical covariance, the variance repeated for every feature (one row per component shows it).")
    full = table(["parameter"] + [h for h, _ in shown], body, cls="numbers")
    if len(rows) > MAX_TABLE_ROWS // 2 and any(np.isfinite(r.post_sd) and r.post_sd > 0 for r in rows):
        # a long list (the heroes' 36 means) is summarised by the rows where EM and the posterior differ most,
        # in posterior standard deviations; the whole table stays on the page, folded
        gap = np.array([abs(r.em - r.post_mean) / r.post_sd if np.isfinite(r.post_sd) and r.post_sd > 0 else -1.0
                        for r in rows])
        top = np.argsort(-gap, kind="stable")[:MAX_DIAGNOSTIC_ROWS // 2 + 3]
        inside = sum(r.em_in_posterior is True for r in rows)
        judged = sum(r.em_in_posterior is not None for r in rows)
        summary = table(["parameter", "gap (posterior sd)"] + [h for h, _ in shown],
                        [[rows[i].label, fixed(gap[i], 2)] + body[i][1:] for i in sorted(top)], cls="numbers",
                        caption=f"The {len(top)} of {len(rows)} parameters where EM's estimate is furthest from the "
                                f"posterior mean; gap: |EM - posterior mean| / posterior sd. EM lies inside the "
                                f"posterior interval for {inside} of {judged}.")
        full = summary + (f"<details><summary>every parameter ({len(rows)} rows)</summary>{full}</details>")
    return subsection("The same as a table", full, note)


def _wald_scale_note(info: xr.Dataset) -> str:
    prefix = "wald_scale_"
    scales = [(key[len(prefix):], value) for key, value in info.attrs.items() if key.startswith(prefix)]
    if not scales:  # a results file written before the intervals were formed on unconstrained scales
        return "Wald intervals are estimate +- z se on the natural scale."
    return ("Wald intervals are formed on a scale where the parameter is unbounded and mapped back, so they stay "
            "inside its range: " + "; ".join(f"{name} on the {scale}" for name, scale in scales)
            + ". EM se is on the natural scale (delta method).")


def _sorted_thetas(ctx: Context) -> str:
    exact, posterior, em = ctx.group("exact"), ctx.group("posterior"), ctx.group("em")
    if exact is None or posterior is None or em is None or "theta" not in posterior or "theta_sorted_mean" not in exact:
        return ""
    k = posterior.sizes["component"]
    draws = np.sort(posterior["theta"].transpose("chain", "draw", "component").values.reshape(-1, k), axis=1)
    em_sorted = np.sort(em["theta"].values)
    rows = []
    for j in range(k):
        lo, hi = equal_tailed(draws[:, j], ctx.prob)
        four = (lambda v: fixed(v, 4))  # thetas lie in (0, 1): four decimals throughout
        rows.append([f"theta, rank {j + 1} (smallest first)", four(em_sorted[j]), four(draws[:, j].mean()),
                     four(draws[:, j].std(ddof=1)), f"{four(lo)} – {four(hi)}",
                     four(exact["theta_sorted_mean"].values[j]), four(exact["theta_sorted_sd"].values[j]),
                     f"{four(exact['theta_sorted_lower'].values[j])} – {four(exact['theta_sorted_upper'].values[j])}"])
    body = table(["quantity", "EM", "posterior mean", "posterior sd", f"{ctx.pct} equal-tailed",
                  "exact mean", "exact sd", f"exact {ctx.pct} equal-tailed"], rows)
    body += figure(figures.theta_marginals(draws, exact=exact, em_values=em_sorted), "theta-sorted",
                   "The thetas sorted within each draw: histograms of the draws, exact densities, EM (dashed).")
    return subsection("Label-invariant view: the thetas sorted within each draw", body,
                      "The symmetric model cannot tell the coins apart, so per-coin posterior means of the raw draws "
                      "average over both labellings. Sorting each draw removes the labels; the exact column is what "
                      "the sampler should find.")


def _membership(ctx: Context) -> str:
    em, post, exact = ctx.group("em"), ctx.group("posterior_membership"), ctx.group("exact")
    data = ctx.group("data")
    if em is None or "resp" not in em:
        return ""
    resp = em["resp"]
    obs_dim = resp.dims[0]
    n, k = resp.shape
    columns = [("EM", resp.values)]
    if post is not None and "membership" in post:
        columns.append(("posterior, raw labels", post["membership"].values))
    if post is not None and "membership_relabelled" in post:
        columns.append(("posterior, relabelled", post["membership_relabelled"].values))
    if exact is not None and "membership" in exact:
        columns.append(("exact, raw labels", exact["membership"].values))
    names = component_names(ctx.tree, k)
    parts = [_agreement_table(ctx, columns)]
    if n <= MAX_TABLE_ROWS:
        labels = _obs_labels(ctx, obs_dim, n)
        truth = data["true_component"].values if data is not None and "true_component" in data else None
        header = ([_obs_word(obs_dim)] + [f"{name} P({names[c]})" for name, _ in columns for c in range(k)]
                  + (["true component"] if truth is not None else []))
        rows = [[labels[i]] + [fixed(p[i, c], 3) for _, p in columns for c in range(k)]
                + ([names[int(truth[i])] if 0 <= int(truth[i]) < k else int(truth[i])] if truth is not None else [])
                for i in range(n)]
        parts.append(table(header, rows, caption=_raw_labels_caption(columns, k)))
    else:
        parts.append(_members_by_name(ctx, obs_dim, resp.values, dict(columns).get("posterior, relabelled"), names))
    note = ("Under the symmetric model every raw posterior membership is 1/K by symmetry: labels carry no information "
            "until the draws are relabelled. EM picks one labelling and reports it with confidence."
            if ctx.spec.get("bayes", {}).get("variant") == "symmetric" else "")
    return subsection("Cluster membership", "".join(parts), note)


#: a membership probability below this is called doubtful in the table of members
DOUBTFUL = 0.9


def _members_by_name(ctx: Context, obs_dim: str, resp: np.ndarray, posterior: np.ndarray | None,
                     names: list[str]) -> str:
    """Too many observations for a row each, but named ones (the heroes): one row per component listing
    its members by name, each with the posterior's probability that it belongs there."""
    n, k = resp.shape
    labels = _obs_labels(ctx, obs_dim, n)
    if n > 300 or all(label.lstrip("-").isdigit() for label in labels):
        return ""  # numbered rows: a list of numbers tells a reader nothing a count does not
    em_label = resp.argmax(axis=1)
    prob = posterior if posterior is not None and posterior.shape == resp.shape else resp
    source = "the posterior's (relabelled draws)" if prob is posterior else "EM's"
    rows = []
    for c in range(k):
        members = np.flatnonzero(em_label == c)
        members = members[np.argsort(-prob[members, c], kind="stable")]
        listed = ", ".join(f"{labels[i]} {fixed(prob[i, c], 2)}" for i in members)
        # the other component is named only where it, not this one, is the most likely
        doubtful = [f"{labels[i]} ({fixed(prob[i, c], 2)}"
                    + (f"; most likely component {names[int(prob[i].argmax())]})" if prob[i].argmax() != c else ")")
                    for i in members if prob[i, c] < DOUBTFUL]
        rows.append([f"component {names[c]}", len(members), listed, "; ".join(doubtful) or "none"])
    return table(["EM's component", "members", f"who, each with {source} probability of this component",
                  f"doubtful (probability below {DOUBTFUL})"], rows,
                 caption=f"Each {_obs_word(obs_dim)} under the component EM gives it (its most likely one), with "
                         f"{source} probability that it belongs there, most certain first.")


def _obs_word(dim: str) -> str:
    """A table header for the observations' dimension ("obs" is a variable name, not a word)."""
    return {"obs": "observation", "set": "set", "row": "row"}.get(dim, dim.replace("_", " "))


def _raw_labels_caption(columns, k: int) -> str:
    """Why a raw-label column says 1/K beside a relabelled one that does not (they are not in conflict)."""
    raw = [name for name, _ in columns if name.endswith("raw labels")]
    if not raw or not any(name == "posterior, relabelled" for name, _ in columns):
        return ""
    return (f"{' and '.join(raw).capitalize()}: the posterior before its labels are fixed, where every draw and its "
            f"mirror (the components renamed) are equally likely, so each probability is 1/{k} = {fmt(1 / k, 3)} "
            "whatever the data (exactly by enumeration; near it in a sample, whose chains need not visit every "
            "labelling equally often). Posterior, relabelled: the same draws after each one's components were renamed to "
            "match EM's, which is where the data's information about membership shows. Both are right; they answer "
            "different questions.")


def _obs_labels(ctx: Context, dim: str, n: int) -> list[str]:
    for name in ("em", "posterior_membership", "data"):
        ds = ctx.group(name)
        if ds is not None and dim in ds.coords and ds.sizes.get(dim) == n:
            return [str(v) for v in ds[dim].values]
    return [str(i) for i in range(n)]


def _agreement_table(ctx: Context, columns) -> str:
    """Stored agreement measures when the run wrote them, else the simple ones computed here."""
    stored = ctx.group("membership_agreement")
    if stored is not None:
        return _stored_agreement(ctx, stored)
    em = columns[0][1]
    rows = []
    for name, probs in columns[1:]:
        if probs.shape != em.shape:
            continue
        rows.append([f"EM vs {name}", fmt(np.mean(np.abs(em - probs)), 3),
                     f"{np.mean(em.argmax(axis=1) == probs.argmax(axis=1)):.0%}"])
    return table(["comparison", "mean |difference| of probabilities", "same most likely component"], rows) if rows else ""


#: Readable names of the ``membership_agreement`` group's per-observation measures.
AGREEMENT_MEASURES = {
    "entropy_em": "EM's uncertainty (entropy of its probabilities, nats)",
    "entropy_posterior": "posterior's uncertainty (entropy, nats)",
    "abs_diff": "EM against posterior: share of probability that moves",
}


#: Readable names of the ``membership_agreement`` group's single numbers.
SCALAR_AGREEMENT = {
    "mean_abs_diff": "mean absolute difference of membership probabilities, EM against posterior",
    "ari_em_posterior": "adjusted Rand index, EM against the posterior's most likely components",
    "entropy_em": "EM's uncertainty about the component, mean entropy (nats)",
}


def _stored_agreement(ctx: Context, stored: xr.Dataset) -> str:
    """The run's agreement measures: one row per observation (or their mean when there are many), the
    adjusted Rand index as a labelling-by-labelling matrix, each labelling's hard assignment."""
    parts = []
    obs_dim = next((d for d in stored.dims if d not in ("labelling", "labelling_bis")), None)
    measures = [(AGREEMENT_MEASURES.get(v, v.replace("_", " ")), stored[v].values) for v in stored.data_vars
                if obs_dim is not None and stored[v].dims == (obs_dim,)]
    hard = stored["hard_label"] if "hard_label" in stored else None
    k = ctx.group("em").sizes.get("component", 0) if ctx.group("em") is not None else 0
    names = component_names(ctx.tree, k) if k else []
    if obs_dim is not None and (measures or hard is not None):
        n = stored.sizes[obs_dim]
        labellings = [str(v) for v in hard["labelling"].values] if hard is not None else []
        header = [_obs_word(obs_dim)] + [f"most likely component, {name}" for name in labellings] + [m for m, _ in measures]
        coin = (lambda c: names[int(c)] if 0 <= int(c) < len(names) else str(int(c)))
        if n <= MAX_TABLE_ROWS:
            rows = [[str(o)] + [coin(hard.values[j, i]) for j in range(len(labellings))]
                    + [fixed(values[i], 3) for _, values in measures] for i, o in enumerate(stored[obs_dim].values)]
        else:  # the means alone (each observation's component is in the table of members by name)
            header = ["over the observations"] + [m for m, _ in measures]
            rows = [[f"mean over {n}"] + [fixed(np.mean(values), 3) for _, values in measures]]
        parts.append(table(header, rows))
    scalars = [(key, value) for key, value in stored.attrs.items() if np.ndim(value) == 0]
    scalars += [(name, var.values) for name, var in stored.data_vars.items() if var.ndim == 0]
    if scalars:
        caption = None
        if "mean_abs_diff" in stored.attrs and "abs_diff" in stored and k:
            # two numbers for one disagreement read as a contradiction unless the page says how they relate
            share = float(np.mean(stored["abs_diff"].values))
            caption = (f"The mean absolute difference is over every (observation, component) probability, so it is the "
                       f"share of probability that moves times 2 / K: {fixed(share, 3)} x 2 / {k} = {fmt(2 * share / k, 3)}, "
                       "the same disagreement on another scale.")
        parts.append(table(["measure", "value"], [[SCALAR_AGREEMENT.get(key, key.replace("_", " ")), fmt(value, 3)]
                                                  for key, value in scalars], caption=caption or ""))
    if "ari" in stored:
        labellings = [str(v) for v in stored["labelling"].values]
        rows = [[name] + [fmt(v, 3) for v in stored["ari"].values[i]] for i, name in enumerate(labellings)]
        parts.append(table(["adjusted Rand index"] + labellings, rows,
                           caption="Agreement of the hard assignments, 1 for the same partition (whatever the names), "
                                   "about 0 for chance agreement."))
    return "".join(parts)


#: Readable names of the labellings graded against the known groups.
TRUTH_LABELLINGS = {
    "EM": "soft EM (most likely component)",
    "hard EM": "hard EM",
    "k-means": "k-means",
    "posterior mode": "posterior (most likely component, relabelled)",
}


def _sentence_start(text: str) -> str:
    """``text`` with its first letter capitalised and the rest kept ("soft EM" -> "Soft EM", not "Soft em")."""
    return text[:1].upper() + text[1:]


def _truth_agreement(ctx: Context) -> str:
    """Every clustering against the known groups of ``[data] truth``: ARI, then one confusion table each."""
    agreement = ctx.group("truth_agreement")
    if agreement is None or "ari" not in agreement:
        return ""
    labellings = [str(v) for v in agreement["labelling"].values]
    groups = [str(v) for v in agreement["truth_group"].values]
    names = component_names(ctx.tree, agreement.sizes["component"])
    column = agreement.attrs.get("column", "")
    parts = [table(["clustering", "adjusted Rand index against the known groups"],
                   [[TRUTH_LABELLINGS.get(name, name), fmt(agreement["ari"].values[i], 3)]
                    for i, name in enumerate(labellings)],
                   caption="1: the clustering splits the observations exactly as the known groups do (whatever the "
                           "component numbers); about 0: no better than chance; below 0: worse than chance.")]
    for i, name in enumerate(labellings):
        counts = agreement["confusion"].values[i]
        rows = [[group] + [int(c) for c in counts[g]] + [int(counts[g].sum())] for g, group in enumerate(groups)]
        parts.append(table([f"known group ({column})" if column else "known group"]
                           + [f"component {n}" for n in names] + ["total"], rows,
                           caption=f"{_sentence_start(TRUTH_LABELLINGS.get(name, name))}: how many observations of each "
                                   f"known group it puts in each component."))
    return subsection("The clusters against the known groups", "".join(parts),
                      f"The column {column!r} was named as the known groups ([data] truth): it was not fitted, and "
                      "each clustering is graded against it. Each clustering's components are renumbered to match "
                      "soft EM's as closely as they can, so the tables read side by side; a good clustering shows one "
                      "large count per row.")


#: Columns of the model-choice table: (variable, header, which way is better: "min", "max" or None).
MODEL_CHOICE_COLUMNS = (
    ("loglik", "log-likelihood at EM's answer", None),
    ("n_params", "free parameters", None),
    ("bic", "BIC", "min"),
    ("aic", "AIC", "min"),
    ("icl", "ICL", "min"),
    ("log_evidence", "log evidence log p(data | K), exact", "max"),
    ("elpd_loo", "elpd, PSIS-LOO (± se)", "max"),
    ("p_loo", "effective parameters (LOO)", None),
    ("n_pareto_k_bad", "points with Pareto k > 0.7", None),
    ("elpd_waic", "elpd, WAIC", "max"),
    ("lrt_statistic", "likelihood ratio 2(l(K+1) - l(K))", None),
    ("lrt_p_value", "bootstrap p, K against K+1", None),
    ("elpd_lfo", "elpd, leave-future-out 1-step-ahead (± MC error)", "max"),
    ("lfo_refits", "posterior fits (LFO)", None),
    ("lfo_n_bad_k", "LFO terms with Pareto k > 0.7", None),
    ("note", "note", None),
)

LRT_NOTE = (
    " The likelihood-ratio columns test K components against K + 1 (McLachlan 1987; mclust's "
    "mclustBootstrapLRT): the statistic is twice what the best EM fit gains from one more component. Its "
    "chi-squared distribution does not hold here, because K components are the K + 1 model with a weight at 0 or "
    "two components equal, on the boundary of its parameters, where the regularity conditions fail; so its null "
    "distribution is simulated instead: {n_boot} data sets drawn from the K fit, each refitted with K and K + 1 "
    "components under the same restart rule, p = (1 + the number at least as large as the data's) / ({n_boot} + 1), "
    "so the smallest p possible is {p_min:.3g}. A small p says K + 1 fits better than K components could by chance; "
    "a large p says the data give no evidence against K, not that K is right. Testing K = 1, 2, ... in turn "
    "and stopping at the first large p is a sequence of tests whose error rates add up, and the test's answer "
    "depends on the K fit being a good description of the data it simulates from.{failed}"
)

SPARSE_NOTE = (
    "A different question from the table's: instead of fitting each K and comparing, one mixture is given more "
    "components than the data need (K_max = {k_max}) and Dirichlet({e0:g}, ..., {e0:g}) weights; with so small a "
    "concentration the posterior empties the superfluous components rather than splitting a group "
    "(Rousseau & Mengersen 2011; Malsiner-Walli, Frühwirth-Schnatter & Grün 2016, whose e0 = 0.01 this default "
    "follows). The number of clusters is then the number of occupied components K+, counted in one allocation per "
    "posterior draw drawn from its conditional given the draw's parameters: the bars are P(K+ = k | data), with "
    "Monte Carlo standard errors from the effective sample size. It assumes the components' shape (the family and "
    "its priors) is right, so a skewed group may need two components; and the answer depends on e0 (a larger e0 "
    "fills more components). {sampler}"
)

#: The sentence for a series (dependent observations), where leave-future-out replaces LOO.
LFO_NOTE = (" For a time series, pointwise leave-one-out is not valid: leaving out y_t still conditions on the points "
            "after it, which say much about the hidden state at t, so the left-out point is predicted partly from its own "
            "future and the score rewards interpolation, not prediction. Leave-future-out cross-validation (PSIS-LFO, "
            "Bürkner, Gabry & Vehtari 2020) scores what a model is for: the sum over t from L on of log p(y_t | y_1 .. "
            "y_(t-1)), each point predicted from its past only. The posterior is sampled given the first L points "
            "({first}); later prefixes are reached by Pareto-smoothed importance weights, and where their Pareto k "
            "exceeds 0.7 the posterior is sampled again on the points so far (the refits counted in the table), with the "
            "priors of the whole series' posterior, the same in every refit, as the weights between refits assume. A term "
            "whose k stays above 0.7 (refits exhausted) is untrustworthy and counted. Every K is scored on the same "
            "terms, so the column compares K; its ± is the Monte Carlo error of the estimate, not the sampling "
            "variability of the data.")

MODEL_CHOICE_NOTE = (
    "What each column estimates: BIC (-2 log-likelihood + parameters x log n) approximates -2 log evidence; AIC "
    "(-2 log-likelihood + 2 x parameters) estimates how well EM's answer predicts new data; ICL is BIC plus a penalty "
    "for uncertain assignments, so it prefers well-separated clusters; {evidence}elpd (expected log predictive "
    "density) from PSIS-LOO or WAIC estimates how well the "
    "posterior predicts a left-out observation. They can disagree because they answer different questions "
    "(explaining these data on average over the prior, or predicting new data) and penalise parameters "
    "differently; with a handful of observations the differences between K are often smaller than their "
    "standard errors.{fixed} Best value per column in bold (lowest BIC, AIC, ICL; highest log evidence and elpd).")

#: Parts of the note for a model choice that has them: the exact evidence, fixed equal weights.
EVIDENCE_NOTE = ("the log evidence p(data | K) is the probability of the data averaged over the prior (computed "
                 "exactly, where shown, by summing over every assignment of sets to components); ")
FIXED_WEIGHTS_NOTE = (" A larger K need not score better even on the log-likelihood when the weights are fixed "
                      "equal: K = 3 coins each used a third of the time cannot express K = 2's halves, so the models "
                      "are not nested.")


def _model_choice(ctx: Context) -> str:
    choice = ctx.group("model_choice")
    if choice is None or "K" not in choice.dims:
        return _sparse_mixture(ctx, None)
    ks = choice["K"].values
    # A fit with a component on too few points to estimate its covariance wins every criterion by a spike;
    # it is marked and never bolded (best among the other rows).
    degenerate = (np.asarray(choice["degenerate"].values, dtype=float) == 1) if "degenerate" in choice \
        else np.zeros(len(ks), dtype=bool)
    header, cols = ["K"], []
    if "n_starts" in choice and np.isfinite(np.asarray(choice["n_starts"].values, dtype=float)).any():
        reached, starts = choice["n_reached_best"].values, choice["n_starts"].values
        cols.append([f"{int(h)} of {int(n)}" if np.isfinite(n) else "" for h, n in zip(reached, starts)])
        header.append("EM starts at the best")
    for var, title, better in MODEL_CHOICE_COLUMNS:
        if var not in choice:
            continue
        values = choice[var].values
        if var == "note":
            continue  # written below the table: a column of long sentences squeezes every other column
        else:
            values = np.asarray(values, dtype=float)
            if not np.isfinite(values).any():
                continue  # e.g. no exact evidence when enumeration is too large
            kept = np.where(degenerate, np.nan, values)
            best = None
            if better is not None and np.isfinite(kept).any():
                best = int(np.nanargmax(kept) if better == "max" else np.nanargmin(kept))
            se = (choice["elpd_loo_se"].values if var == "elpd_loo" and "elpd_loo_se" in choice else
                  choice["elpd_lfo_mcse"].values if var == "elpd_lfo" and "elpd_lfo_mcse" in choice else None)
            places = decimals_for(values, 3 if var == "p_loo" else 5)  # one precision per column
            cols.append([_best(_with_se(v, None if se is None else se[i], places), i == best)
                         if var not in ("n_params", "n_pareto_k_bad", "lfo_refits", "lfo_n_bad_k") else fmt(v)
                         for i, v in enumerate(values)])
        header.append(title)
    rows = [[f"{int(k)} (degenerate)" if degenerate[i] else int(k)] + [col[i] for col in cols] for i, k in enumerate(ks)]
    criteria = {title: choice[v].values for v, title in (("bic", "BIC"), ("aic", "AIC"), ("icl", "ICL")) if v in choice}
    for var, title in (("log_evidence", "-2 log evidence"), ("elpd_loo", "-2 elpd (LOO)"), ("elpd_waic", "-2 elpd (WAIC)"),
                       ("elpd_lfo", "-2 elpd (LFO)")):
        if var in choice and np.isfinite(np.asarray(choice[var].values, dtype=float)).any():
            if var == "elpd_lfo" and "lfo_first" in choice and choice.attrs.get("n_obs") is not None:
                # a sum over the points after L only: said in the legend, beside criteria summed over all points
                first = np.nanmin(np.asarray(choice["lfo_first"].values, dtype=float))
                title = f"-2 elpd (LFO, the last {int(choice.attrs['n_obs']) - int(first)} points)"
            criteria[title] = -2 * np.asarray(choice[var].values, dtype=float)
    fig = figure(figures.model_choice(ks, criteria), "model-choice",
                 "Each criterion against K on the deviance scale (log evidence and elpd times -2), lower is better.") if criteria else ""
    em = ctx.group("em")
    fixed_weights = em is not None and "w" in em and "w" not in varying_names(em)
    note = MODEL_CHOICE_NOTE.format(evidence=EVIDENCE_NOTE if "log_evidence" in choice and np.isfinite(
        np.asarray(choice["log_evidence"].values, dtype=float)).any() else "",
                                    fixed=FIXED_WEIGHTS_NOTE if fixed_weights else "")
    if "elpd_lfo" in choice and np.isfinite(np.asarray(choice["elpd_lfo"].values, dtype=float)).any():
        firsts = sorted({int(v) for v in np.asarray(choice["lfo_first"].values, dtype=float) if np.isfinite(v)})
        note += LFO_NOTE.format(first="L = " + ", ".join(map(str, firsts)))
    if "n_starts" in choice:
        note += (" Each K is fitted by EM from several starts under the spec's restart rule (where it asks for it, "
                 "until several end at the same best log-likelihood or the start budget is spent); the column says "
                 "how many ended at the best.")
    if degenerate.any():
        points = choice.attrs.get("min_component_points")
        note += (f" Rows marked degenerate have a component of EM's answer that is no cluster: it holds fewer than "
                 f"{points if points is not None else 'the'} expected points (sum of its responsibilities), too few to "
                 "estimate its covariance (a spike on a few points), or its covariance is singular but for reg_covar "
                 "(its members do not vary along some direction, as when they share one value of a two-valued "
                 "column). Either raises the likelihood without describing a group, and the more so the smaller "
                 "reg_covar; the row's note says which. They are never bolded; the best is chosen among the other rows.")
    if "lrt_p_value" in choice and np.isfinite(np.asarray(choice["lrt_p_value"].values, dtype=float)).any():
        n_boot = int(choice.attrs.get("lrt_bootstrap", 0))
        failed = int(np.nansum(choice["lrt_n_failed"].values)) if "lrt_n_failed" in choice else 0
        missed = int(np.nansum(choice["lrt_n_search_failed"].values)) if "lrt_n_search_failed" in choice else 0
        extra = (f" {failed} simulated data set(s) could not be refitted and were left out." if failed else "") + (
            f" In {missed} simulated data set(s) the K + 1 search ended below the K optimum (a negative statistic): "
            "the restart rule was too weak there." if missed else "")
        note += LRT_NOTE.format(n_boot=n_boot, p_min=1 / (n_boot + 1), failed=extra)
    if "lrt_skipped" in choice.attrs:
        note += f" The likelihood-ratio test of K against K + 1 was asked for but not run: {choice.attrs['lrt_skipped']}."
    notes = ""
    if "note" in choice and any(str(v) for v in choice["note"].values):
        notes = "<ul>" + "".join(f"<li>K = {int(k)}: {esc(str(v))}</li>" for k, v in zip(ks, choice["note"].values)
                                 if str(v)) + "</ul>"
    return (subsection("Choosing K", fig + table(header, rows) + notes, note)
            + _ill_posed(ctx, choice, degenerate) + _sparse_mixture(ctx, choice))


def _sparse_mixture(ctx: Context, choice: xr.Dataset | None) -> str:
    """The overfitted mixture's P(K+ = k | data) as bars, beside the K that BIC, ICL and LOO chose."""
    sparse = ctx.group("sparse_mixture")
    if sparse is None:
        return ""
    title = "How many clusters: an overfitted (sparse) mixture"
    if "skipped" in sparse.attrs:
        return subsection(title, paragraph(f"Not fitted: {sparse.attrs['skipped']}."))
    ks, prob, mcse = sparse["n_clusters"].values, sparse["prob"].values, sparse["prob_mcse"].values
    chosen = {}
    if choice is not None:
        for name, label in (("bic", "BIC"), ("icl", "ICL"), ("elpd_loo", "PSIS-LOO")):
            if f"best_by_{name}" in choice.attrs:
                chosen[label] = int(choice.attrs[f"best_by_{name}"])
    shown = max(int(np.max(np.flatnonzero(prob > 0), initial=0)) + 2, max(chosen.values(), default=1) + 1)
    shown = min(shown, len(ks))
    fig = figure(figures.occupied_components(ks[:shown], prob[:shown], mcse[:shown], chosen), "sparse-mixture",
                 "Posterior probability of each number of occupied components K+ (bars, with ± 2 Monte Carlo "
                 "standard errors); the K that BIC, ICL and PSIS-LOO chose in the table above, marked.")
    rows = [[int(k), fmt(p, 3), fmt(e, 2) if np.isfinite(e) else ""] for k, p, e in zip(ks[:shown], prob[:shown], mcse[:shown])]
    divergent = int(sparse.attrs.get("n_divergent", -1))
    sampler = (f"Sampled with {sparse.attrs.get('sampler', 'NUTS')}, {sparse.sizes['chain']} chains x "
               f"{sparse.sizes['draw']} draws ([model_choice] chains, draws)"
               + (f"; {divergent} divergent transitions, so the probabilities may be biased." if divergent > 0 else "."))
    note = SPARSE_NOTE.format(k_max=int(sparse.attrs["k_max"]), e0=float(sparse.attrs["concentration"]), sampler=sampler)
    return subsection(title, fig + table(["occupied components K+", "posterior probability", "Monte Carlo se"], rows),
                      note)


def _free_parameters(k: int, d: int, covariance: str) -> int:
    """Free parameters of a K-component Gaussian mixture in d dimensions (weights, means, covariances)."""
    per_cov = {"full": d * (d + 1) // 2, "diag": d, "spherical": 1}.get(covariance)
    shared = {"tied": d * (d + 1) // 2}.get(covariance)
    cov = shared if shared is not None else k * (per_cov if per_cov is not None else d * (d + 1) // 2)
    return (k - 1) + k * d + cov


def _ill_posed(ctx: Context, choice: xr.Dataset, degenerate: np.ndarray) -> str:
    """Why a degenerate K (the EM lesson's K = 30 full covariances on 69 heroes) is no answer, in numbers
    read from the results: parameters against data, points per component, where the likelihood goes, and
    why the main fit uses the covariance it does. Empty when no K is degenerate."""
    if not degenerate.any() or "loglik" not in choice or "n_params" not in choice:
        return ""
    n, d = choice.attrs.get("n_obs"), choice.attrs.get("n_features")
    if n is None or d is None:
        return ""
    n, d = int(n), int(d)
    structure = str(choice.attrs.get("covariance", "full"))
    ks, loglik, n_params = choice["K"].values, choice["loglik"].values, choice["n_params"].values
    worst = int(np.flatnonzero(degenerate)[np.argmax(ks[degenerate])])
    k_bad, p_bad = int(ks[worst]), int(n_params[worst])
    numbers = n * d
    per_component = n / k_bad
    ill_posed = p_bad > numbers
    plural = (lambda count, word: f"{count} {word}" + ("" if count == 1 else "s"))
    text = [
        f"The data hold {n} rows x {plural(d, 'feature')} = {numbers} numbers. K = {k_bad} asks for {p_bad} free "
        f"parameters, " + (f"{p_bad / numbers:.1f} times as many as there are numbers, " if ill_posed else "")
        + f"with {per_component:.1f} rows per component on average."]
    if structure == "full" and d > 1:
        text.append(f"A full {d} x {d} covariance ({d * (d + 1) // 2} entries) estimated from fewer than {d + 1} points "
                    "is singular: the points span at most one dimension fewer than their count, so in the other "
                    "directions the variance is zero.")
    if "min_expected_count" in choice:
        text.append(f"In EM's K = {k_bad} answer the smallest component holds "
                    f"{fixed(choice['min_expected_count'].values[worst], 1)} expected rows.")
    text.append(
        "On such a component the likelihood has no maximum: shrink its covariance onto one observation and the "
        "density at that point grows like one over the square root of the covariance's determinant, without bound, "
        "while the other components still cover the rest; the log-likelihood goes to plus infinity. EM stops only "
        "where reg_covar (the small constant added to every variance) holds the collapse, so its log-likelihood of "
        f"{fixed(loglik[worst], 0)} at K = {k_bad} measures reg_covar, not fit.")
    best_aic = choice.attrs.get("degenerate_best_by_aic")
    if best_aic is not None and int(best_aic) == k_bad:
        text.append(f"AIC charges 2 per parameter ({2 * p_bad} in all), less than twice that spurious gain, so "
                    f"without the degenerate mark it would call K = {k_bad} best: an artefact, which is why "
                    "degenerate rows are never bolded.")
    main = ctx.group("em")
    main_structure = ctx.spec.get("model", {}).get("covariance") if isinstance(ctx.spec.get("model"), dict) else None
    data = ctx.group("data")
    if main is not None and main_structure and main_structure != structure:
        k_main = main.sizes.get("component", 0)
        why = [f"The main fit uses K = {k_main} with {main_structure} covariances: "
               f"{_free_parameters(k_main, d, main_structure)} free parameters against "
               f"{_free_parameters(k_main, d, structure)} with {structure} ones."]
        if data is not None and "x" in data and data["x"].ndim == 2:
            x = np.asarray(data["x"].values, dtype=float)
            two_valued = [str(f) for f, j in zip(data["feature"].values, range(x.shape[1]))
                          if len(np.unique(x[:, j])) <= 2]
            if two_valued and main_structure == "spherical":
                why.append(f"{', '.join(two_valued)} take{'s' if len(two_valued) == 1 else ''} only two values: a "
                           "cluster whose members all share one of them has zero variance there, so any covariance "
                           "with its own variance per feature (full or diagonal) is singular on it, the same collapse "
                           "as above; a spherical covariance shares one variance across the features and stays proper.")
        small = [int(k) for k, flag in zip(ks, degenerate) if flag and k <= k_main]
        if small:
            why.append(f"Even K = {', '.join(map(str, small))} with {structure} covariances "
                       f"{'is' if len(small) == 1 else 'are'} marked degenerate in the table above.")
        text.append(" ".join(why))
    if ill_posed:
        text.append(f"The results keep only each K's criteria, not its clusters: a K = {k_bad} fit is the degenerate "
                    "row of the table, and its clusters (a few rows each, decided by the start and by reg_covar) are "
                    "not an answer to set beside this page's row by row.")
    title = f"Why K = {k_bad}" + (f" with {structure} covariances" if d > 1 else "") + " is not an answer"
    return subsection(title, "".join(paragraph(t) for t in text))


def _with_se(value, se, places: int) -> str:
    return fixed(value, places) + (f" ± {fixed(se, places)}" if se is not None and np.isfinite(se) else "")


def _best(text: str, best: bool) -> Raw | str:
    return Raw(f"<strong>{esc(text)}</strong>") if best else text


# --- label switching ----------------------------------------------------------------------------------------


def label_switching_section(ctx: Context) -> str:
    ls = ctx.group("label_switching")
    if ls is None:
        return ""
    summary = next((v for v in ctx.summary.verdicts if v.topic == "label switching"), None)
    facts = [("method", ls.attrs.get("method", "?")),
             *([("labelling taken from", ls.attrs["labelling"])] if "labelling" in ls.attrs else []),
             ("verdict", summary.text if summary else ""),
             ("draws relabelled", f"{ls.attrs.get('n_changed', '?')} of {ls.attrs.get('n_draws_total', '?')}")]
    parts = [key_value_table(facts)]
    relabelled = ctx.group("posterior_relabelled")
    if relabelled is not None and "permutation" in relabelled:
        perms = relabelled["permutation"].transpose("chain", "draw", ...).values
        names = [_component_name(ctx, k) for k in range(perms.shape[-1])]
        parts.append(figure(figures.permutation_timeline(perms, names), "permutations",
                            "The relabelling applied to each draw of each chain; a change of colour is a label switch."))
    if "modal_perm" in ls:
        rows = []
        for i, chain in enumerate(ls["chain"].values):
            row = [int(chain), "(" + ", ".join(_component_name(ctx, int(v)) for v in ls["modal_perm"].values[i]) + ")"]
            row += [f"{float(ls['modal_share'].values[i]):.0%}" if "modal_share" in ls else "",
                    int(ls["n_switches"].values[i]) if "n_switches" in ls else "",
                    int(ls[mode_var].values[i]) if (mode_var := _mode_var(ls)) else ""]
            rows.append(row)
        parts.append(subsection("Per chain", table(["chain", "most frequent relabelling", "share of draws", "switches", "mode"], rows)))
    modes = ctx.group("posterior_modes")
    if modes is not None and modes.sizes.get("mode", 1) > 1:
        parts.append(_per_mode_table(ctx, modes))
    elif "mode_share" in ls:
        parts.append(subsection("Modes (up to relabelling)", table(
            ["mode", "share of draws"], [[int(m), f"{float(s):.0%}"] for m, s in zip(ls["mode"].values, ls["mode_share"].values)])))
    before_after = [v for v in ("rhat_before", "rhat_after", "ess_before", "ess_after") if v in ls]
    if before_after and "parameter" in ls.dims:
        stats = np.stack([np.asarray(ls[v].values, dtype=float) for v in before_after], axis=-1)
        kept, dropped = _stored_parameter_rows(ctx, [str(p) for p in ls["parameter"].values], stats,
                                               constant=~np.isfinite(stats[:, 0]))
        rows = [[label] + [_rhat_cell(stats[i, j]) if v.startswith("rhat") else _ess_cell(stats[i, j])
                           for j, v in enumerate(before_after)] for i, label in kept]
        rows, left_out = _worst_rows(rows, [stats[i, 0] for i, _ in kept])
        readable = {"rhat_before": "R-hat before", "rhat_after": "R-hat after", "ess_before": "bulk ESS before",
                    "ess_after": "bulk ESS after"}
        note = (f" Left out: {dropped} covariance entries that repeat a row shown (a covariance's mirror half, a "
                "spherical covariance's one variance per feature) or never change (its zeros)." if dropped else "")
        parts.append(subsection("R-hat and ESS before and after relabelling",
                                table(["parameter"] + [readable[v] for v in before_after], rows),
                                (left_out + note).strip()))
    return "".join(parts)


def _stored_parameter_rows(ctx: Context, labels: list[str], stats: np.ndarray,
                           constant: np.ndarray | None = None) -> tuple[list[tuple[int, str]], int]:
    """The rows worth showing of a table keyed by the results' flat parameter labels (``mu[2,3]``,
    ``cov[1,4,4]``), each as (its index, a label a reader understands: ``mu[2, 最大攻速]``, with the
    components' and features' names as elsewhere on the page), and how many were left out.

    Left out: a covariance's mirror half, its constant entries (``constant``: the zeros off a spherical or
    diagonal covariance's diagonal) and an entry whose ``stats`` (one row per label) repeat an earlier
    entry of the same component (a spherical covariance's one variance, stored once per feature); a row
    that stands for such repeats is named ``variance[c] (every feature)``.
    """
    posterior = ctx.group("posterior")
    kept, first, repeats = [], {}, set()
    for i, label in enumerate(labels):
        name, _, inside = label.partition("[")
        index = [int(v) for v in inside.rstrip("]").split(",") if v.strip().lstrip("-").isdigit()]
        dims = ([d for d in posterior[name].dims if d not in SAMPLE_DIMS]
                if posterior is not None and name in posterior else [])
        if len(dims) != len(index):  # not a label of the posterior's shape: shown as stored
            kept.append((i, _named_label(ctx, label)))
            continue
        where = dict(zip(dims, index))
        if "feature" in where and "feature_bis" in where:
            if where["feature_bis"] < where["feature"] or (constant is not None and constant[i]):
                continue
            key = (name, where.get("component"), tuple(np.round(stats[i], 9)))
            if key in first:
                repeats.add(first[key])
                continue
            first[key] = len(kept)
        names = []
        for d, v in where.items():
            if d == "component":
                names.append(_component_name(ctx, v))
            elif d in posterior[name].coords:
                names.append(str(posterior[name][d].values[v]))
            else:
                names.append(str(v))
        kept.append((i, f"{name}[{', '.join(names)}]"))
    for position in repeats:
        i, label = kept[position]
        kept[position] = (i, f"variance[{label.partition('[')[2].split(',')[0].strip()}] (every feature)")
    return kept, len(labels) - len(kept)


def _per_mode_table(ctx: Context, modes: xr.Dataset) -> str:
    """One row per parameter, per mode its mean, equal-tailed interval, R-hat and bulk ESS (relabelled
    draws of that mode's chains); constant elements (zeros of a spherical covariance) left out."""
    pct = percent(modes.attrs.get('interval_prob', 0.89))
    ids = [int(m) for m in modes["mode"].values]
    header = ["parameter"]
    for m in ids:
        chains = ", ".join(str(c) for c, cm in zip(modes["chain"].values, modes["chain_mode"].values) if int(cm) == m)
        header += [f"mode {m} ({float(modes['share'].values[m]):.0%}; chain {chains}): mean [{pct}]", "R-hat", "ESS"]
    body, apart = [], []
    lower_all, upper_all = np.asarray(modes["lower"].values, dtype=float), np.asarray(modes["upper"].values, dtype=float)
    mean_all = np.asarray(modes["mean"].values, dtype=float)
    # a covariance's mirror half, its constant zeros and the equal diagonal of a spherical one repeat rows shown
    kept, _ = _stored_parameter_rows(ctx, [str(p) for p in modes["parameter"].values],
                                     np.concatenate([mean_all, lower_all, upper_all]).T,
                                     constant=np.all(lower_all == upper_all, axis=0))
    for j, label in kept:
        lower, upper = lower_all[:, j], upper_all[:, j]
        if np.all(lower == upper):
            continue
        width = np.nanmean(upper - lower)
        means = mean_all[:, j]
        apart.append(float(np.ptp(means) / width) if width > 0 else 0.0)
        row = [label]
        for m in ids:
            rhat, ess = float(modes["rhat"].values[m, j]), float(modes["ess_bulk"].values[m, j])
            row += [f"{fmt(modes['mean'].values[m, j])} [{fmt_interval(lower[m], upper[m])}]",
                    _rhat_cell(rhat), _ess_cell(ess, 100 * int(modes["n_chains"].values[m]))]
        body.append(row)
    main = int(modes.attrs.get("main_mode", 0))
    shown_table = table(header, body)
    if len(body) > MAX_DIAGNOSTIC_ROWS:
        # the rows where the modes differ most (their means apart, in interval widths); all of them folded
        top = np.sort(np.argsort(-np.asarray(apart), kind="stable")[:MAX_DIAGNOSTIC_ROWS])
        shown_table = (table(header, [body[i] for i in top],
                             caption=f"The {len(top)} of {len(body)} parameters where the modes' means lie furthest "
                                     "apart, measured in interval widths.")
                       + f"<details><summary>every parameter ({len(body)} rows)</summary>{shown_table}</details>")
    return subsection(f"Modes, each summarised apart ({len(ids)})", shown_table,
                      "The chains sit in different posterior modes, not relabelled copies of one answer: each mode's "
                      "relabelled draws are summarised on their own, with R-hat and bulk ESS among its chains (a mode "
                      "of one chain: its two halves). A share is the share of chains that settled in the mode, not the "
                      f"mode's posterior probability. The comparison table shows mode {main}.")


def _mode_var(ls: xr.Dataset) -> str | None:
    for name in ("mode", "chain_mode"):
        if name in ls.data_vars and "chain" in ls[name].dims:
            return name
    return None


# --- reproducibility ------------------------------------------------------------------------------------------


#: What each recorded stage covers (keys as the runners record them in the results' ``timings``).
STAGE_NAMES = {
    "load": "load the data",
    "em": "EM: restarts and the reported fits",
    "em_uncertainty": "EM uncertainty: observed-information SEs and bootstrap",
    "exact": "exact posterior by enumeration",
    "sampling_total": "posterior, whole: compile + tune + draws + log-likelihood",
    "sampling": "posterior, the sampler's clock: tuning + draws",
    "sampling_build": "posterior: load the compiled sampler, or build it from the PyMC model; start checks",
    "sampling_compile": "posterior: JAX compile (trace, lower, compile or load from cache)",
    "sampling_tune": "posterior: tuning (warm-up)",
    "sampling_draws": "posterior: draws",
    "sampling_constrain_and_log_likelihood": "posterior: draws to model variables, pointwise log-likelihood",
    "relabel": "relabelling and label-switching diagnostics",
    "model_choice": "model choice over K",
    "model_choice_lrt": "model choice: bootstrap likelihood-ratio tests of K against K + 1",
    "sparse_mixture": "overfitted (sparse) mixture: EM start, sampling, occupied components",
    "write": "write results.nc",
    "report": "render this page",
}


def _folded_timings(timings: dict, rows: list[list]) -> str:
    """The stage table folded under a line naming the slowest stages (the details are a click away)."""
    measured = [(k, float(v)) for k, v in timings.items() if isinstance(v, (int, float)) and np.isfinite(v)]
    slowest = sorted(measured, key=lambda kv: -kv[1])[:3]
    line = "slowest: " + ", ".join(f"{STAGE_NAMES.get(k, k)} {fmt(v, 3)} s" for k, v in slowest) if slowest else "stages"
    return f"<details><summary>{esc(line)}</summary>{table(['stage', 'seconds'], rows)}</details>"


def reproducibility_section(ctx: Context, extra_timings=None) -> str:
    tree = ctx.tree
    timings = dict(root_json(tree, "timings", {}) or {})
    timings.update({k: v for k, v in (extra_timings or {}).items() if v is not None})
    versions = root_json(tree, "versions", {}) or {}
    machine = root_json(tree, "machine", {}) or {}
    seeds = root_json(tree, "seeds", {}) or {}
    facts = [("command", tree.attrs.get("command", "")), ("spec", tree.attrs.get("spec_name", "")),
             ("spec file", tree.attrs.get("spec_path", "")), ("seed", tree.attrs.get("seed", "")),
             ("stage seeds", ", ".join(f"{k} {v}" for k, v in seeds.items()) if isinstance(seeds, dict) else seeds),
             ("created", tree.attrs.get("created", "")),
             ("machine", ", ".join(f"{k}: {v}" for k, v in machine.items()) if isinstance(machine, dict) else machine)]
    timing_rows = ([[STAGE_NAMES.get(k, k), fmt(v, 3)] for k, v in timings.items() if v is not None]
                   if isinstance(timings, dict) else [])
    version_line = ", ".join(f"{k} {v}" for k, v in versions.items()) if isinstance(versions, dict) else ""
    spec_text = json.dumps(ctx.spec, indent=2, ensure_ascii=False) if ctx.spec else str(tree.attrs.get("spec", ""))
    return (key_value_table(facts, cls="")
            + subsection("Time per stage (s)", _folded_timings(timings, timing_rows) if timing_rows else "")
            + subsection("Package versions", paragraph(version_line + ".") if version_line else "")
            + subsection("Spec as run", f"<details><summary>the spec with every default filled in "
                                        f"({spec_text.count(chr(10)) + 1} lines)</summary><pre>{esc(spec_text)}</pre></details>"))

