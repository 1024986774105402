"""HTML rendering of a results tree.

Each section is a function of the tree that returns HTML, or "" when its data are not in the file,
so the page shows only what the run produced. Every string that came from the user (title, data set
and column names, set labels, file paths, the spec) passes through :func:`esc`.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path

import numpy as np
import xarray as xr

from emvsbayes.report import figures
from emvsbayes.results import atomic_write, root_json

#: R-hat above this, or bulk ESS below this many per chain, is a warning (Vehtari et al. 2021).
RHAT_LIMIT = 1.01
ESS_PER_CHAIN = 100


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{float(x):.{digits}g}"


def table(header: list[str], rows: list[list], *, cls: str = "") -> str:
    """An HTML table; cells are escaped unless they are ``Raw``."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell if isinstance(cell, Raw) else esc(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Raw(str):
    """Already-safe HTML (built here, never from user text)."""


def group(tree: xr.DataTree, name: str) -> xr.Dataset | None:
    return tree[name].to_dataset() if name in tree.children else None


def section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>' if body else ""


# --- sections --------------------------------------------------------------------------------------


def _summary(tree) -> tuple[str, list[str]]:
    spec = root_json(tree, "spec", {})
    data = group(tree, "data")
    em = group(tree, "em")
    posterior = group(tree, "posterior")
    warnings = []
    rows = [
        ["model", f"{spec.get('model', {}).get('family', '?')} mixture, K = {spec.get('model', {}).get('components', '?')}"
                  + (f", weights {spec['model'].get('weights')}" if spec.get("model", {}).get("family") == "coins" else "")],
        ["data", f"{data.attrs.get('source', '') if data is not None else ''}"],
    ]
    if em is not None:
        converged = bool(em.attrs.get("converged", 0))
        rows.append(["EM", f"log-likelihood {fmt(em['loglik'].item(), 8)} after {em.attrs.get('n_iter')} iterations"
                           + ("" if converged else " (NOT converged)")])
        if not converged:
            warnings.append("EM stopped at max_iter without converging: raise [em] max_iter or loosen tol.")
    if posterior is not None:
        rows.append(["Bayes", f"{spec.get('bayes', {}).get('variant', '')} model, sampler {posterior.attrs.get('sampler', '?')}, "
                              f"{posterior.sizes.get('chain')} chains x {posterior.sizes.get('draw')} draws"])
        stats = group(tree, "sample_stats")
        if stats is not None and "diverging" in stats:
            n_div = int(stats["diverging"].sum())
            if n_div:
                warnings.append(f"{n_div} divergent transitions: the sampler missed part of the posterior; "
                                "raise [bayes] target_accept (e.g. 0.95) or use the ordered variant.")
    return table(["", ""], rows, cls="card"), warnings


def _diagnostics(tree) -> tuple[str, list[str]]:
    import arviz as az

    posterior = group(tree, "posterior")
    if posterior is None:
        return "", []
    var_names = [v for v in ("theta", "w", "mu", "sigma") if v in posterior and posterior[v].std() > 0]
    summary = az.summary(tree, var_names=var_names, kind="diagnostics")
    warnings = []
    rows = []
    n_chains = posterior.sizes["chain"]
    for label, row in summary.iterrows():
        rhat, ess_bulk, ess_tail = float(row["r_hat"]), float(row["ess_bulk"]), float(row["ess_tail"])
        flags = []
        if rhat > RHAT_LIMIT:
            flags.append("R-hat > 1.01")
        if ess_bulk < ESS_PER_CHAIN * n_chains:
            flags.append("low ESS")
        rows.append([label, fmt(rhat, 4), fmt(ess_bulk, 4), fmt(ess_tail, 4), ", ".join(flags) or "ok"])
    bad_rhat = [r[0] for r in rows if "R-hat" in r[4]]
    if bad_rhat:
        warnings.append(f"R-hat above {RHAT_LIMIT} for {', '.join(bad_rhat)}: chains disagree (for a mixture, often "
                        "different labellings or modes); see the joint posterior and relabel before reading means.")
    low = [r[0] for r in rows if "low ESS" in r[4]]
    if low:
        warnings.append(f"low effective sample size for {', '.join(low)}: draw more ([bayes] draws).")
    stats = group(tree, "sample_stats")
    div = ""
    if stats is not None and "diverging" in stats:
        per_chain = stats["diverging"].sum("draw").values.astype(int)
        div = f"<p>Divergent transitions per chain: {esc(', '.join(map(str, per_chain)))}.</p>"
    return table(["parameter", "R-hat", "bulk ESS", "tail ESS", "flags"], rows) + div, warnings


def _interval(values: np.ndarray, prob: float) -> tuple[float, float]:
    tail = (1 - prob) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def _hdi(values: np.ndarray, prob: float) -> tuple[float, float]:
    """Narrowest interval holding ``prob`` of the sorted draws."""
    x = np.sort(values)
    n = len(x)
    m = max(1, int(np.floor(prob * n)))
    widths = x[m:] - x[: n - m]
    i = int(np.argmin(widths))
    return float(x[i]), float(x[i + m])


def _comparison(tree) -> str:
    em = group(tree, "em")
    posterior = group(tree, "posterior")
    exact = group(tree, "exact")
    if em is None:
        return ""
    prob = float(root_json(tree, "spec", {}).get("report", {}).get("interval_prob", 0.89))
    pct = f"{round(prob * 100)}%"
    header = ["parameter", "EM", "posterior mean", "posterior sd", f"{pct} equal-tailed", f"{pct} HDI", "exact mean", "exact sd"]
    rows = []
    for name in ("theta", "w", "mu", "sigma"):
        if name not in em:
            continue
        for k in range(em.sizes.get("component", 1)):
            label = f"{name}[{k}]"
            row = [label, fmt(em[name].values[k])]
            if posterior is not None and name in posterior:
                draws = posterior[name].values[..., k].ravel()
                if np.ptp(draws) == 0:
                    row += [fmt(draws[0]), "fixed", "", ""]
                else:
                    lo, hi = _interval(draws, prob)
                    hlo, hhi = _hdi(draws, prob)
                    row += [fmt(draws.mean()), fmt(draws.std(ddof=1)), f"{fmt(lo)} – {fmt(hi)}", f"{fmt(hlo)} – {fmt(hhi)}"]
            else:
                row += ["", "", "", ""]
            if exact is not None and f"{name}_mean" in exact:
                row += [fmt(exact[f"{name}_mean"].values[k]), fmt(exact[f"{name}_sd"].values[k])]
            else:
                row += ["", ""]
            rows.append(row)
    body = table(header, rows)
    if exact is not None and posterior is not None and "theta" in posterior:
        draws = np.sort(posterior["theta"].values.reshape(-1, posterior.sizes["component"]), axis=1)
        em_sorted = np.sort(em["theta"].values)
        sorted_rows = []
        for j in range(draws.shape[1]):
            lo, hi = _interval(draws[:, j], prob)
            sorted_rows.append([f"theta, rank {j + 1} (smallest first)", fmt(em_sorted[j]), fmt(draws[:, j].mean()),
                                fmt(draws[:, j].std(ddof=1)), f"{fmt(lo)} – {fmt(hi)}",
                                fmt(exact["theta_sorted_mean"].values[j]), fmt(exact["theta_sorted_sd"].values[j]),
                                f"{fmt(exact['theta_sorted_lower'].values[j])} – {fmt(exact['theta_sorted_upper'].values[j])}"])
        body += ("<h3>Label-invariant view: the thetas sorted within each draw</h3>"
                 "<p>The symmetric model cannot tell the coins apart, so per-coin posterior means of theta are "
                 "averages over both labellings and sit between the coins. Sorting each draw removes the labels; "
                 "the exact column is what the sampler should find.</p>"
                 + table(["quantity", "EM", "posterior mean", "posterior sd", f"{pct} equal-tailed",
                          "exact mean", "exact sd", f"exact {pct} equal-tailed"], sorted_rows))
        body += figures.theta_marginals(draws, exact=exact, em_values=em_sorted)
    return body


def _em_section(tree) -> str:
    trace = group(tree, "em_trace")
    if trace is None:
        return ""
    data = group(tree, "data")
    parts = []
    paths = [("soft EM", trace["loglik"].values)]
    hard_trace = group(tree, "em_hard_trace")
    if hard_trace is not None:
        paths.append(("hard EM (classification log-likelihood)", hard_trace["loglik"].values))
    restarts = group(tree, "em_restarts")
    parts.append(figures.loglik_paths(paths))
    if restarts is not None:
        rows = [[int(r), fmt(restarts["loglik"].values[i], 8), int(restarts["n_iter"].values[i]),
                 "yes" if restarts["converged"].values[i] else "no",
                 ", ".join(fmt(v) for v in np.atleast_1d(restarts[_main_param(restarts)].values[i]).ravel())]
                for i, r in enumerate(restarts["restart"].values)]
        parts.append("<h3>Every restart</h3>" + table(["restart", "log-likelihood", "iterations", "converged",
                                                         _main_param(restarts)], rows))
    for title, tr in (("Soft EM, step by step", trace), ("Hard EM, step by step", hard_trace)):
        if tr is not None and "resp" in tr and data is not None:
            parts.append(f"<h3>{esc(title)}</h3>" + _coin_steps(tr, data))
    return "".join(parts)


def _main_param(ds) -> str:
    return "theta" if "theta" in ds else "mu"


def _coin_steps(trace: xr.Dataset, data: xr.Dataset, max_rows: int = 12) -> str:
    """The lesson's table: for each iteration, each set's responsibilities and the coins' expected counts."""
    k = trace.sizes["component"]
    n_iter = trace.sizes["iteration"]
    shown = list(range(min(n_iter, max_rows)))
    if n_iter > max_rows:
        shown[-1] = n_iter - 1
    blocks = []
    for it in shown:
        theta = trace["theta"].values[it]
        w = trace["w"].values[it]
        resp = trace["resp"].values[it]
        rows = []
        for i, label in enumerate(data["set"].values):
            h, n = int(data["heads"].values[i]), int(data["tosses"].values[i])
            rows.append([label, f"{h} H, {n - h} T"] + [fmt(resp[i, c], 3) for c in range(k)]
                        + [f"{fmt(resp[i, c] * h, 3)} H, {fmt(resp[i, c] * (n - h), 3)} T" for c in range(k)])
        eh, et = trace["expected_heads"].values[it], trace["expected_tails"].values[it]
        rows.append(["total", ""] + [""] * k + [f"{fmt(eh[c], 4)} H, {fmt(et[c], 4)} T" for c in range(k)])
        header = ["set", "seen"] + [f"P(coin {c})" for c in range(k)] + [f"coin {c} made" for c in range(k)]
        caption = (f"Iteration {it}: theta = ({', '.join(fmt(t, 4) for t in theta)}), w = ({', '.join(fmt(x, 3) for x in w)}), "
                   f"log-likelihood {fmt(trace['loglik'].values[it], 8)}")
        if it + 1 < n_iter:
            nxt = trace["theta"].values[it + 1]
            caption += ". M-step: theta_k = heads / (heads + tails) made by coin k = (" + ", ".join(
                f"{fmt(eh[c], 4)} / {fmt(eh[c] + et[c], 4)} = {fmt(nxt[c], 4)}" for c in range(k)) + ")"
        blocks.append(f"<details{' open' if it < 2 else ''}><summary>{esc(caption)}</summary>{table(header, rows)}</details>")
    if n_iter > max_rows:
        blocks.insert(-1, f"<p>… iterations {max_rows - 1} to {n_iter - 2} left out …</p>")
    return "".join(blocks)


def _bayes_section(tree) -> str:
    posterior = group(tree, "posterior")
    em = group(tree, "em")
    if posterior is None:
        return ""
    parts = []
    if "theta" in posterior and posterior.sizes["component"] == 2:
        draws = posterior["theta"].values.reshape(-1, 2)
        points = [("EM answer", em["theta"].values)] if em is not None else []
        hard = group(tree, "em_hard")
        if hard is not None:
            points.append(("hard EM", hard["theta"].values))
        parts.append("<h3>Joint posterior of (theta[0], theta[1])</h3><p>Filled marks are EM's answers, hollow "
                     "ones the same answers with the coins renamed: the likelihood is identical there, so a symmetric "
                     "posterior has a mode at each.</p>" + figures.joint_theta(draws, points, group(tree, "exact")))
    import arviz as az

    var_names = [v for v in ("theta", "w", "mu", "sigma") if v in posterior and posterior[v].std() > 0]
    parts.append("<h3>Trace</h3>" + figures.arviz_figure(az.plot_trace_dist, tree, var_names=var_names))
    return "".join(parts)


def _membership(tree) -> str:
    em = group(tree, "em")
    post = group(tree, "posterior_membership")
    exact = group(tree, "exact")
    data = group(tree, "data")
    if em is None or "resp" not in em or data is None:
        return ""
    k = em.sizes["component"]
    dim = "set" if "set" in em["resp"].dims else em["resp"].dims[0]
    rows = []
    for i, label in enumerate(em[dim].values):
        row = [label] + [fmt(em["resp"].values[i, c], 3) for c in range(k)]
        if post is not None:
            row += [fmt(post["membership"].values[i, c], 3) for c in range(k)]
        if exact is not None and "membership" in exact:
            row += [fmt(exact["membership"].values[i, c], 3) for c in range(k)]
        if "true_component" in data:
            row.append(int(data["true_component"].values[i]))
        rows.append(row)
    header = [dim] + [f"EM P({c})" for c in range(k)]
    if post is not None:
        header += [f"posterior P({c})" for c in range(k)]
    if exact is not None and "membership" in exact:
        header += [f"exact P({c})" for c in range(k)]
    if "true_component" in data:
        header.append("true")
    note = ("<p>Under the symmetric model every set's posterior membership is 1/K by symmetry: the labels "
            "themselves carry no information. EM picks one labelling and reports it with confidence.</p>"
            if root_json(tree, "spec", {}).get("bayes", {}).get("variant") == "symmetric" else "")
    return note + table(header, rows)


def _reproducibility(tree) -> str:
    timings = root_json(tree, "timings", {}) or {}
    versions = root_json(tree, "versions", {}) or {}
    machine = root_json(tree, "machine", {}) or {}
    spec = root_json(tree, "spec", {}) or {}
    seeds = root_json(tree, "seeds", {}) or {}
    rows = [["command", tree.attrs.get("command", "")], ["spec file", tree.attrs.get("spec_path", "")],
            ["seed", tree.attrs.get("seed", "")], ["stage seeds", ", ".join(f"{k} {v}" for k, v in seeds.items())],
            ["created", tree.attrs.get("created", "")],
            ["machine", ", ".join(f"{k}: {v}" for k, v in machine.items())]]
    return (table(["", ""], rows)
            + "<h3>Time per stage (s)</h3>" + table(["stage", "seconds"], [[k, fmt(v, 3)] for k, v in timings.items() if v is not None])
            + "<h3>Package versions</h3>" + table(["package", "version"], [[k, v] for k, v in versions.items()])
            + "<h3>Spec as run</h3><pre>" + esc(json.dumps(spec, indent=2, ensure_ascii=False)) + "</pre>")


def _data_section(tree) -> str:
    data = group(tree, "data")
    if data is None or "heads" not in data:
        return ""
    rows = [[label, int(h), int(n)] + ([int(data["true_component"].values[i])] if "true_component" in data else [])
            for i, (label, h, n) in enumerate(zip(data["set"].values, data["heads"].values, data["tosses"].values))]
    header = ["set", "heads", "tosses"] + (["true coin"] if "true_component" in data else [])
    return table(header, rows)


def render_report(tree: xr.DataTree, extra_timings=None) -> str:
    """The whole page as a string."""
    title = tree.attrs.get("title", "emvsbayes report")
    summary_card, warnings = _summary(tree)
    diagnostics, diag_warnings = _diagnostics(tree)
    warnings += diag_warnings
    warn_html = ("<ul class='warnings'>" + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>") if warnings else \
        "<p class='ok'>No warnings.</p>"
    body = "".join([
        section("Summary", summary_card + warn_html, "summary"),
        section("Data", _data_section(tree), "data"),
        section("EM: the iteration path", _em_section(tree), "em"),
        section("EM against the posterior", _comparison(tree), "comparison"),
        section("Cluster membership", _membership(tree), "membership"),
        section("Bayes: the posterior", _bayes_section(tree), "bayes"),
        section("Sampler diagnostics", diagnostics, "diagnostics"),
        section("Reproducibility", _reproducibility(tree), "reproducibility"),
    ])
    css = resources.files("emvsbayes.report").joinpath("style.css").read_text(encoding="utf-8")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{esc(title)}</title><style>{css}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p class='sub'>EM against the Bayesian posterior · emvsbayes</p></header>"
            f"<main>{body}</main></body></html>")


def render_report_file(tree: xr.DataTree, path, extra_timings=None) -> Path:
    """Render and write atomically (a crash leaves the previous report, never half a page)."""
    page = render_report(tree, extra_timings)
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path
