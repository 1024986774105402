"""The report's sections. Each is a function of the :class:`Context` returning HTML, or "" when its
data are not in the results file, so the page shows only what the run produced.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import xarray as xr

from emvsbayes.report import figures
from emvsbayes.report.markup import (
    Raw,
    esc,
    figure,
    fmt,
    fmt_interval,
    group,
    key_value_table,
    paragraph,
    subsection,
    table,
)
from emvsbayes.report.params import (
    ParamRow,
    display_draws,
    elements,
    equal_tailed,
    interval_prob,
    component_names,
    multimodal,
    parameter_rows,
    posterior_group,
    reported_names,
    varying_names,
)
from emvsbayes.report.summary import DiagnosticRow, Summary, build_summary, diagnostic_rows, verdict_mark
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
        return f"{round(self.prob * 100)}%"

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
        svg = figures.scatter_2d(x, probs, (features[0], features[1]), centres)
        caption = f"{colour}{shown}; crosses: EM's component means."
    elif d <= 4:
        svg = figures.pair_plot(x, probs, features, centres)
        caption = f"Every pair of features. {colour}{shown}; crosses: EM's component means."
    else:
        svg = figures.projection(x, probs, centres)
        caption = f"The data projected on their first two principal components. {colour}{shown}."
    transforms = _as_text(data.attrs.get("transforms") or "")
    notes = paragraph(f"Source: {data.attrs.get('source', '?')}; {n} observations, {d} feature{'s' if d > 1 else ''} "
                      f"({', '.join(features)}).")
    if transforms:
        notes += paragraph(f"Preprocessing: {transforms}.")
    return notes + figure(svg, "data", caption)


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

        grid = np.arange(0, int(x.max()) + 2)
        rate, w = np.asarray(em["rate"].values, dtype=float), np.asarray(em["w"].values, dtype=float)
        densities = grid, w[:, None] * poisson.pmf(grid[None, :], rate[:, None])
    width = max(1, int(np.ceil((x.max() - x.min() + 1) / 60)))  # one bar per count, up to 60 bars
    bins = np.arange(x.min() - 0.5, x.max() + width + 0.5, width)
    colour = f"Rows coloured by {source}" if probs is not None else "Rows"
    svg = figures.histogram_1d(x, probs, column, densities, bins=bins, ylabel="share of rows")
    caption = (f"{colour} (rug); lines: EM's weighted component probabilities of each count, dashed: their sum."
               if densities is not None else f"{colour} (rug).")
    notes = paragraph(f"Source: {data.attrs.get('source', '?')}; {n} counts ({column}), from {int(x.min())} to "
                      f"{int(x.max())}, mean {x.mean():.4g}, variance {x.var(ddof=1):.4g}.")
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
    caption = ("Log-likelihood per iteration of every restart." if path_var else
               "Log-likelihood per iteration; soft EM never decreases it.")
    return subsection("Log-likelihood per iteration", figure(figures.loglik_paths(paths), "em-loglik", caption))


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


def _restarts(ctx: Context) -> str:
    restarts = ctx.group("em_restarts")
    if restarts is None:
        return ""
    optima = ctx.group("em_optima")
    optimum = optima["optimum_of_restart"].values if optima is not None and "optimum_of_restart" in optima else None
    start = restarts["init_loglik"].values if "init_loglik" in restarts else None
    fig = figure(figures.restart_outcomes(start, restarts["loglik"].values, optimum), "em-restarts",
                 "Each restart's log-likelihood at its start (hollow) and where it stopped (filled, coloured by the optimum reached).")
    name = _location_parameter(restarts)
    rows = [[int(r), fmt(restarts["loglik"].values[i], 8), int(restarts["n_iter"].values[i]),
             "yes" if restarts["converged"].values[i] else "no"]
            + ([int(optimum[i])] if optimum is not None else [])
            + [", ".join(fmt(v) for v in np.atleast_1d(restarts[name].values[i]).ravel())]
            for i, r in enumerate(restarts["restart"].values)]
    header = ["restart", "log-likelihood", "iterations", "converged"] + (["optimum"] if optimum is not None else []) + [name]
    best = restarts.attrs.get("best_restart")
    note = f"The reported EM answer is restart {best}." if best is not None else ""
    return subsection("Every restart", fig + table(header, rows), note)


def _location_parameter(ds: xr.Dataset) -> str:
    """The first reported parameter that is not a weight (coins' theta, Gaussians' mu, Poisson rates): the
    one a table of restarts shows."""
    return next((name for name in reported_names(ds) if name != "w"), "w")


def _optima(ctx: Context) -> str:
    optima = ctx.group("em_optima")
    if optima is None:
        return ""
    restarts = ctx.group("em_restarts")
    names = varying_names(restarts) if restarts is not None else []
    rows = []
    for i in range(optima.sizes["optimum"]):
        row = [i, fmt(optima["loglik"].values[i], 8), int(optima["count"].values[i])]
        if "representative" in optima and restarts is not None:
            rep = int(optima["representative"].values[i])
            row.append("; ".join(f"{n} = " + ", ".join(fmt(v) for v in np.atleast_1d(restarts[n].values[rep]).ravel())
                                 for n in names if n != "cov"))
        rows.append(row)
    header = ["optimum", "log-likelihood", "restarts reaching it"] + (["parameters"] if restarts is not None else [])
    note = ("Restarts that reached the same answer up to renaming the components count as one optimum. "
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
            rows.append([label, f"{h} H, {n - h} T"] + [fmt(resp[i, c], 3) for c in range(k)]
                        + [f"{fmt(resp[i, c] * h, 3)} H, {fmt(resp[i, c] * (n - h), 3)} T" for c in range(k)])
        eh, et = trace["expected_heads"].values[it], trace["expected_tails"].values[it]
        rows.append(["total", ""] + [""] * k + [f"{fmt(eh[c], 4)} H, {fmt(et[c], 4)} T" for c in range(k)])
        caption = (f"Iteration {it}: E-step at " + ", ".join(f"theta_{names[c]} = {fmt(t, 4)}" for c, t in enumerate(theta))
                   + f" (weights {', '.join(fmt(x, 3) for x in w)}), log-likelihood {fmt(trace['loglik'].values[it], 8)}")
        if it + 1 < n_iter:
            nxt = trace["theta"].values[it + 1]
            caption += ". M-step: theta = heads / (heads + tails) each coin made: " + ", ".join(
                f"theta_{names[c]} = {fmt(eh[c], 4)} / {fmt(eh[c] + et[c], 4)} = {fmt(nxt[c], 4)}" for c in range(k))
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
    for label, group_name in (("EM", "em"), ("hard EM", "em_hard")):
        est = ctx.group(group_name)
        if est is not None and name in est:
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
        small = xr.DataTree.from_dict({"posterior": shown})
        thin = shown.sizes["draw"] < ds.sizes["draw"]
        note = f" (one draw in {int(np.ceil(ds.sizes['draw'] / shown.sizes['draw']))} shown)" if thin else ""
        cov_note = "; covariances by their variances" if "variance" in shown else ""
        slug = when.split()[0]
        parts.append(subsection(f"Trace, {when}", figure(figures.arviz_figure(az.plot_trace_dist, small), f"trace-{slug}",
                                                         f"arviz-plots plot_trace_dist{note}{cov_note}.")))
        parts.append(subsection(f"Rank plots, {when}", figure(
            figures.arviz_figure(az.plot_rank, small, row_height=2.3), f"rank-{slug}",
            "arviz-plots plot_rank: the fractional ranks' ECDF difference per chain; lines outside the envelope mean "
            f"that chain differs from the others{note}.")))
    return "".join(parts)


def _diagnostics(ctx: Context) -> str:
    rows = ctx.diagnostics
    if not rows:
        return ""
    posterior = ctx.group("posterior")
    n_chains = posterior.sizes.get("chain", 1)
    relabelled = any(np.isfinite(r.rhat_relabelled) for r in rows)
    header = ["parameter", "R-hat", "bulk ESS", "tail ESS"] + (["R-hat relabelled", "bulk ESS relabelled"] if relabelled else [])
    body = [[_named_label(ctx, r.label), _flag(r.rhat, r.rhat > 1.01), fmt(r.ess_bulk), fmt(r.ess_tail)]
            + ([_flag(r.rhat_relabelled, r.rhat_relabelled > 1.01), _flag(r.ess_relabelled, r.ess_relabelled < 100 * n_chains)]
               if relabelled else []) for r in rows]
    stats = ctx.group("sample_stats")
    extra = ""
    if stats is not None and "diverging" in stats:
        per_chain = np.asarray(stats["diverging"].values, dtype=float).sum(axis=-1).astype(int)
        extra += paragraph(f"Divergent transitions per chain: {', '.join(map(str, per_chain))}.")
    if stats is not None and "step_size" in stats:
        extra += paragraph("Step size per chain (last draw): " + ", ".join(fmt(np.asarray(v).ravel()[-1], 3) for v in stats["step_size"].values) + ".")
    note = ("R-hat above 1.01 or bulk ESS below 100 per chain is marked. Under label switching the raw "
            "R-hat is high by construction; the relabelled columns are the ones to read.")
    modes = multimodal(ctx.tree)
    if modes is not None:
        note += (f" Here the chains sit in {modes.sizes['mode']} distinct modes, so even the relabelled columns "
                 "compare chains of different modes: R-hat and ESS within each mode are in the label-switching "
                 "section's per-mode table.")
    return subsection("Sampler diagnostics", table(header, body) + extra, note)


def _flag(value: float, bad: bool) -> Raw | str:
    return Raw(f'<span class="bad">{esc(fmt(value))}</span>') if bad else fmt(value)


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


def _forest(ctx: Context, rows: list[ParamRow]) -> str:
    varying = [r for r in rows if not r.fixed]
    if not varying:
        return ""
    sources = _sources(ctx, varying)
    _, relabelled = posterior_group(ctx.tree)
    modes = multimodal(ctx.tree)
    caption = "; ".join(name for name, _, _ in sources) + (
        " (relabelled draws" + (f", mode {int(modes.attrs.get('main_mode', 0))} only" if modes is not None else "")
        + ")." if relabelled else ".") + " Points are estimates, bars equal-tailed intervals."
    return figure(figures.forest([r.label for r in varying], sources), "forest", caption)


def _comparison_table(ctx: Context, rows: list[ParamRow]) -> str:
    _, relabelled = posterior_group(ctx.tree)
    columns = [
        ("EM", lambda r: fmt(r.em), True),
        ("EM se", lambda r: fmt(r.se), any(np.isfinite(r.se) for r in rows)),
        (f"Wald {ctx.pct}", lambda r: fmt_interval(*r.wald), any(np.isfinite(r.wald[0]) for r in rows)),
        (f"bootstrap {ctx.pct}", lambda r: fmt_interval(*r.bootstrap), any(np.isfinite(r.bootstrap[0]) for r in rows)),
        ("posterior mean", lambda r: fmt(r.post_mean), any(np.isfinite(r.post_mean) for r in rows)),
        ("posterior sd", lambda r: "fixed" if r.fixed else fmt(r.post_sd), any(np.isfinite(r.post_mean) for r in rows)),
        (f"{ctx.pct} equal-tailed", lambda r: fmt_interval(*r.post_eti), any(np.isfinite(r.post_eti[0]) for r in rows)),
        (f"{ctx.pct} HDI", lambda r: fmt_interval(*r.post_hdi), any(np.isfinite(r.post_hdi[0]) for r in rows)),
        # exact summaries are of the unlabelled posterior: beside relabelled draws they would mislead
        ("exact mean", lambda r: fmt(r.exact_mean), not relabelled and any(np.isfinite(r.exact_mean) for r in rows)),
        ("exact sd", lambda r: fmt(r.exact_sd), not relabelled and any(np.isfinite(r.exact_sd) for r in rows)),
        ("EM inside", lambda r: {True: "yes", False: Raw('<span class="bad">no</span>'), None: ""}[r.em_in_posterior],
         any(r.em_in_posterior is not None for r in rows)),
    ]
    shown = [(h, f) for h, f, present in columns if present]
    body = [[r.label] + [f(r) for _, f in shown] for r in rows]
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
    return subsection("The same as a table", table(["parameter"] + [h for h, _ in shown], body), note)


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
        rows.append([f"theta, rank {j + 1} (smallest first)", fmt(em_sorted[j]), fmt(draws[:, j].mean()),
                     fmt(draws[:, j].std(ddof=1)), fmt_interval(lo, hi),
                     fmt(exact["theta_sorted_mean"].values[j]), fmt(exact["theta_sorted_sd"].values[j]),
                     fmt_interval(exact["theta_sorted_lower"].values[j], exact["theta_sorted_upper"].values[j])])
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
        header = [obs_dim] + [f"{name} P({names[c]})" for name, _ in columns for c in range(k)] + (["true"] if truth is not None else [])
        rows = [[labels[i]] + [fmt(p[i, c], 3) for _, p in columns for c in range(k)]
                + ([int(truth[i])] if truth is not None else []) for i in range(n)]
        parts.append(table(header, rows, caption=_raw_labels_caption(columns, k)))
    note = ("Under the symmetric model every raw posterior membership is 1/K by symmetry: labels carry no information "
            "until the draws are relabelled. EM picks one labelling and reports it with confidence."
            if ctx.spec.get("bayes", {}).get("variant") == "symmetric" else "")
    return subsection("Cluster membership", "".join(parts), note)


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
        header = [obs_dim] + [f"most likely component, {name}" for name in labellings] + [m for m, _ in measures]
        coin = (lambda c: names[int(c)] if 0 <= int(c) < len(names) else str(int(c)))
        if n <= MAX_TABLE_ROWS:
            rows = [[str(o)] + [coin(hard.values[j, i]) for j in range(len(labellings))]
                    + [fmt(values[i], 3) for _, values in measures] for i, o in enumerate(stored[obs_dim].values)]
        else:
            rows = [[f"mean over {n}"] + ["" for _ in labellings] + [fmt(np.mean(values), 3) for _, values in measures]]
        parts.append(table(header, rows))
    scalars = [(key, value) for key, value in stored.attrs.items() if np.ndim(value) == 0]
    scalars += [(name, var.values) for name, var in stored.data_vars.items() if var.ndim == 0]
    if scalars:
        parts.append(table(["measure", "value"], [[SCALAR_AGREEMENT.get(key, key.replace("_", " ")), fmt(value, 3)]
                                                  for key, value in scalars]))
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
    ("note", "note", None),
)

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
        return ""
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
            if not any(str(v) for v in values):
                continue  # an empty column says nothing
            cols.append([str(v) for v in values])
        else:
            values = np.asarray(values, dtype=float)
            if not np.isfinite(values).any():
                continue  # e.g. no exact evidence when enumeration is too large
            kept = np.where(degenerate, np.nan, values)
            best = None
            if better is not None and np.isfinite(kept).any():
                best = int(np.nanargmax(kept) if better == "max" else np.nanargmin(kept))
            se = choice["elpd_loo_se"].values if var == "elpd_loo" and "elpd_loo_se" in choice else None
            digits = 3 if var == "p_loo" else 6
            cols.append([_best(_with_se(v, None if se is None else se[i], digits), i == best)
                         if var != "n_params" and var != "n_pareto_k_bad" else fmt(v) for i, v in enumerate(values)])
        header.append(title)
    rows = [[f"{int(k)} (degenerate)" if degenerate[i] else int(k)] + [col[i] for col in cols] for i, k in enumerate(ks)]
    criteria = {title: choice[v].values for v, title in (("bic", "BIC"), ("aic", "AIC"), ("icl", "ICL")) if v in choice}
    for var, title in (("log_evidence", "-2 log evidence"), ("elpd_loo", "-2 elpd (LOO)"), ("elpd_waic", "-2 elpd (WAIC)")):
        if var in choice and np.isfinite(np.asarray(choice[var].values, dtype=float)).any():
            criteria[title] = -2 * np.asarray(choice[var].values, dtype=float)
    fig = figure(figures.model_choice(ks, criteria), "model-choice",
                 "Each criterion against K on the deviance scale (log evidence and elpd times -2), lower is better.") if criteria else ""
    em = ctx.group("em")
    fixed_weights = em is not None and "w" in em and "w" not in varying_names(em)
    note = MODEL_CHOICE_NOTE.format(evidence=EVIDENCE_NOTE if "log_evidence" in choice and np.isfinite(
        np.asarray(choice["log_evidence"].values, dtype=float)).any() else "",
                                    fixed=FIXED_WEIGHTS_NOTE if fixed_weights else "")
    if "n_starts" in choice:
        note += (" Each K is fitted by EM from several starts under the spec's restart rule (where it asks for it, "
                 "until several end at the same best log-likelihood or the start budget is spent); the column says "
                 "how many ended at the best.")
    if degenerate.any():
        points = choice.attrs.get("min_component_points")
        note += (f" Rows marked degenerate have a component of EM's answer holding fewer than "
                 f"{points if points is not None else 'the'} expected points (sum of its responsibilities), too few to "
                 "estimate its covariance: a spike on a few points that raises the likelihood without being a "
                 "cluster. They are never bolded; the best is chosen among the other rows.")
    return subsection("Choosing K", fig + table(header, rows), note)


def _with_se(value, se, digits: int = 6) -> str:
    return fmt(value, digits) + (f" ± {fmt(se, 3)}" if se is not None and np.isfinite(se) else "")


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
        parts.append(figure(figures.permutation_timeline(perms), "permutations",
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
        parts.append(_per_mode_table(modes))
    elif "mode_share" in ls:
        parts.append(subsection("Modes (up to relabelling)", table(
            ["mode", "share of draws"], [[int(m), f"{float(s):.0%}"] for m, s in zip(ls["mode"].values, ls["mode_share"].values)])))
    before_after = [v for v in ("rhat_before", "rhat_after", "ess_before", "ess_after") if v in ls]
    if before_after and "parameter" in ls.dims:
        rows = [[_named_label(ctx, str(p))] + [fmt(ls[v].values[i]) for v in before_after]
                for i, p in enumerate(ls["parameter"].values)]
        readable = {"rhat_before": "R-hat before", "rhat_after": "R-hat after", "ess_before": "bulk ESS before",
                    "ess_after": "bulk ESS after"}
        parts.append(subsection("R-hat and ESS before and after relabelling",
                                table(["parameter"] + [readable[v] for v in before_after], rows)))
    return "".join(parts)


def _per_mode_table(modes: xr.Dataset) -> str:
    """One row per parameter, per mode its mean, equal-tailed interval, R-hat and bulk ESS (relabelled
    draws of that mode's chains); constant elements (zeros of a spherical covariance) left out."""
    pct = f"{round(float(modes.attrs.get('interval_prob', 0.89)) * 100)}%"
    ids = [int(m) for m in modes["mode"].values]
    header = ["parameter"]
    for m in ids:
        chains = ", ".join(str(c) for c, cm in zip(modes["chain"].values, modes["chain_mode"].values) if int(cm) == m)
        header += [f"mode {m} ({float(modes['share'].values[m]):.0%}; chain {chains}): mean [{pct}]", "R-hat", "ESS"]
    body, shown = [], set()
    for j, parameter in enumerate(modes["parameter"].values):
        lower, upper = modes["lower"].values[:, j], modes["upper"].values[:, j]
        name, _, index = str(parameter).partition("[")
        index = [int(i) for i in index.rstrip("]").split(",") if i.strip().lstrip("-").isdigit()]
        # A covariance's mirror half, and the equal diagonal of a spherical one, repeat rows shown already.
        repeat = (name, tuple(index[:1]), tuple(modes["mean"].values[:, j]), tuple(lower), tuple(upper))
        if np.all(lower == upper) or (name == "cov" and len(index) == 3 and index[2] < index[1]) or repeat in shown:
            continue
        shown.add(repeat)
        row = [str(parameter)]
        for m in ids:
            rhat, ess = float(modes["rhat"].values[m, j]), float(modes["ess_bulk"].values[m, j])
            row += [f"{fmt(modes['mean'].values[m, j])} [{fmt_interval(lower[m], upper[m])}]",
                    _flag(rhat, rhat > 1.01), _flag(ess, ess < 100 * int(modes["n_chains"].values[m]))]
        body.append(row)
    main = int(modes.attrs.get("main_mode", 0))
    return subsection(f"Modes, each summarised apart ({len(ids)})", table(header, body),
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
    "write": "write results.nc",
    "report": "render this page",
}


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
    version_rows = [[k, v] for k, v in versions.items()] if isinstance(versions, dict) else []
    spec_text = json.dumps(ctx.spec, indent=2, ensure_ascii=False) if ctx.spec else str(tree.attrs.get("spec", ""))
    return (key_value_table(facts, cls="")
            + subsection("Time per stage (s)", table(["stage", "seconds"], timing_rows) if timing_rows else "")
            + subsection("Package versions", table(["package", "version"], version_rows) if version_rows else "")
            + subsection("Spec as run", f"<pre>{esc(spec_text)}</pre>"))

