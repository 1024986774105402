"""The summary card: what was fitted, one-line verdicts, and every warning with what to do about it.

Computed once from the results tree (:func:`build_summary`) and shown three ways: the top of the
HTML report, the reports index, and the terminal (:func:`summary_card_text`).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field, replace

import numpy as np
import xarray as xr

from emvsbayes.family import percent
from emvsbayes.report.markup import attr_flag, fmt, group, plain
from emvsbayes.report.params import (ParamRow, elements, interval_prob, multimodal, parameter_rows, readable_label,
                                     varying_names)
from emvsbayes.results import root_json

#: R-hat above this, or bulk ESS below this many per chain, is a warning (Vehtari et al. 2021).
RHAT_LIMIT = 1.01
ESS_PER_CHAIN = 100
#: PSIS-LOO is unreliable for an observation whose Pareto k exceeds this (Vehtari et al. 2024).
PARETO_K_LIMIT = 0.7


@dataclass(frozen=True, slots=True)
class Finding:
    """A warning: what is wrong, in plain words, and what to do about it."""

    problem: str
    advice: str


@dataclass(frozen=True, slots=True)
class Verdict:
    topic: str
    text: str
    ok: bool | None  # None: not applicable / no data / neither good nor bad
    mark: str = ""  # a word for the badge; "ok"/"CHECK"/"–" from ``ok`` when empty


@dataclass(frozen=True, slots=True)
class DiagnosticRow:
    label: str
    rhat: float
    ess_bulk: float
    ess_tail: float
    rhat_relabelled: float = float("nan")
    ess_relabelled: float = float("nan")


@dataclass(frozen=True, slots=True)
class Summary:
    title: str
    facts: list[tuple[str, str]]
    verdicts: list[Verdict]
    warnings: list[Finding] = field(default_factory=list)


# --- diagnostics --------------------------------------------------------------------------------------


def _diagnostics(ds: xr.Dataset, names: list[str]) -> dict[str, tuple[float, float, float]]:
    """label -> (rank-normalised split R-hat, bulk ESS, tail ESS) for each scalar of ``names`` that
    varies, in one vectorised call per diagnostic (ArviZ's defaults, as ``az.summary`` computes them).

    Only the scalars the report shows (a covariance's upper triangle, see :func:`elements`), and not
    the constant ones (the zeros off a diagonal or spherical covariance's diagonal): they have no R-hat,
    and computing them was most of the work (for the heroes spec's 3 x 12 x 12 spherical covariances,
    471 scalars summarised for 75 that vary, 6 s of a 25 s re-render) and one warning each.
    """
    import arviz_stats

    labels, series = [], []
    for name in names:
        da = ds[name].transpose("chain", "draw", ...)
        values = da.values
        for label, where in elements(da):
            draws = values[(slice(None), slice(None), *(where[d] for d in da.dims[2:]))]
            if np.ptp(draws) > 0:
                labels.append(label)
                series.append(draws)
    if not series:
        return {}
    stacked = xr.DataArray(np.stack(series, axis=-1), dims=("chain", "draw", "scalar"))
    from emvsbayes.labels.xarray import constant_elements_quiet

    with constant_elements_quiet():
        rhat = arviz_stats.rhat(stacked).values
        bulk = arviz_stats.ess(stacked, method="bulk").values
        tail = arviz_stats.ess(stacked, method="tail").values
    return {label: (float(r), float(b), float(t)) for label, r, b, t in zip(labels, rhat, bulk, tail)}


def diagnostic_rows(tree: xr.DataTree) -> list[DiagnosticRow]:
    """R-hat and ESS per varying scalar parameter, of the raw draws and (when written) the relabelled ones."""
    posterior = group(tree, "posterior")
    names = varying_names(posterior)
    if not names or posterior.sizes.get("chain", 0) < 1:
        return []
    raw = _diagnostics(posterior, names)
    relabelled_ds = group(tree, "posterior_relabelled")
    relabelled = _diagnostics(relabelled_ds, [n for n in names if n in relabelled_ds]) if relabelled_ds is not None else {}
    rows = []
    for label, (rhat, ess_bulk, ess_tail) in raw.items():
        extra = {}
        if label in relabelled:
            extra = {"rhat_relabelled": relabelled[label][0], "ess_relabelled": relabelled[label][1]}
        rows.append(DiagnosticRow(label, rhat, ess_bulk, ess_tail, **extra))
    return rows


def n_divergent(tree: xr.DataTree) -> int | None:
    stats = group(tree, "sample_stats")
    if stats is None or "diverging" not in stats:
        return None
    return int(np.asarray(stats["diverging"].values, dtype=float).sum())


# --- facts ----------------------------------------------------------------------------------------------


def _model_text(spec: dict, em: xr.Dataset | None, description: str | None = None) -> str:
    """The model in words: the family's own description written into the results file, else (a file
    written before it) the family's name and K."""
    model = spec.get("model", {}) if isinstance(spec, dict) else {}
    if not description:
        k = model.get("components") or (em.sizes.get("component") if em is not None else "?")
        description = f"{model.get('family', '?')} model, K = {k}"
    variant = spec.get("bayes", {}).get("variant") if isinstance(spec.get("bayes"), dict) else None
    return description + (f"; {variant} prior" if variant else "")


def _data_text(data: xr.Dataset | None) -> str:
    if data is None:
        return "–"
    source = data.attrs.get("source", "")
    if "heads" in data:
        n = data.sizes.get("set", len(data["heads"]))
        return f"{source}: {n} sets, {int(np.sum(data['tosses'].values))} tosses"
    if "x" in data and data["x"].ndim == 1 and "feature" not in data.dims:
        column = data.attrs.get("column") or "x"
        return f"{source}: {data['x'].size} observations of {column}"
    if "x" in data:
        features = [str(f) for f in data["feature"].values] if "feature" in data.coords else []
        return f"{source}: {data.sizes.get('obs')} observations of {', '.join(features) or data.sizes.get('feature')}"
    return str(source)


def _em_text(tree: xr.DataTree, em: xr.Dataset) -> str:
    converged = attr_flag(em, "converged", True)
    text = (f"log-likelihood {fmt(np.asarray(em['loglik'].values).item(), 8)} after {em.attrs.get('n_iter', '?')} "
            f"iterations{'' if converged else ' (not converged)'}")
    restarts = group(tree, "em_restarts")
    if restarts is not None:
        text += f"; best of {restarts.sizes['restart']} restarts"
        if "n_reached_best" in em.attrs:
            text += f", reached by {int(em.attrs['n_reached_best'])}"
    optima = group(tree, "em_optima")
    if optima is not None:
        text += f", {optima.sizes['optimum']} distinct optim{'um' if optima.sizes['optimum'] == 1 else 'a'}"
    return text


def _sampler_text(posterior: xr.Dataset) -> str:
    sampler = posterior.attrs.get("sampler") or posterior.attrs.get("inference_library", "?")
    return f"{sampler}, {posterior.sizes.get('chain')} chains × {posterior.sizes.get('draw')} draws"


# --- verdicts and warnings ------------------------------------------------------------------------------


def _agreement(rows: list[ParamRow], prob: float, main_mode: int | None = None) -> Verdict:
    judged = [r for r in rows if not r.fixed and r.em_in_posterior is not None]
    if not judged:
        return Verdict("estimates", "no posterior to compare EM with", None)
    inside = [r for r in judged if r.em_in_posterior]
    outside = [r.label for r in judged if not r.em_in_posterior]
    text = f"EM's estimate lies inside the {percent(prob)} posterior interval for {len(inside)} of {len(judged)} parameters"
    if main_mode is not None:
        text += f" (posterior mode {main_mode}, the one most chains found)"
    if not outside:
        return Verdict("estimates", text, True)
    # EM outside the posterior's interval is what the comparison exists to show (a prior pulling a
    # component's scale, a likelihood spike, a skewed posterior), not a fault of either engine: a finding,
    # badged as such, not a failed check.
    text += (f" (outside: {', '.join(outside[:6])}{' …' if len(outside) > 6 else ''}); the two answers differ "
             "there: compare them in the table of estimates")
    return Verdict("estimates", text, None, mark="differs")


def _within_mode_findings(modes: xr.Dataset, n_div: int | None, n_draws: int,
                          tree: xr.DataTree | None = None) -> tuple[Verdict, list[Finding]]:
    """The checks inside each mode of a multimodal posterior (``posterior_modes``): R-hat over all chains
    only says that chains in different modes differ; within a mode it says what it always says."""
    rhat = modes["rhat"].values
    ess = modes["ess_bulk"].values
    per_chain = ESS_PER_CHAIN * np.maximum(modes["n_chains"].values, 1)[:, None]
    labels = [str(p) if tree is None else readable_label(tree, str(p)) for p in modes["parameter"].values]
    # NaN (a constant element, e.g. the zeros of a spherical covariance) is neither good nor bad.
    bad = [labels[j] for j in range(len(labels)) if np.any(rhat[:, j] > RHAT_LIMIT)]
    low = [labels[j] for j in range(len(labels)) if np.any(ess[:, j] < per_chain[:, 0])]
    n_modes = modes.sizes["mode"]
    shares = ", ".join(f"mode {int(m)}: {float(s):.0%}" for m, s in zip(modes["mode"].values, modes["share"].values))
    main = int(modes.attrs.get("main_mode", 0))
    findings = [Finding(
        f"The chains sit in {n_modes} distinct posterior modes ({shares} of the draws): R-hat over all chains is "
        "high because they differ, not by itself a sign of too few draws. Each mode is summarised separately; "
        f"the comparison table and its intervals show mode {main}, the one with the largest share.",
        "Read the per-mode table in the label-switching section; a mode's share is the share of chains that "
        "found it, not its posterior probability. Chains start at EM's distinct optima: if EM's best answer is a "
        "local optimum, more restarts ([em] n_init) give better starts. Otherwise consider another number of "
        "components or more informative priors.")]
    if bad:
        findings.append(Finding(
            f"R-hat above {RHAT_LIMIT} within a mode for {_names(bad)}: the chains of one mode disagree, "
            "or one chain drifts, so even the per-mode summaries are not settled.",
            "Run more tuning and draws ([bayes] tune, draws); look at the trace plots of that mode's chains."))
    if low:
        findings.append(Finding(
            f"Effective sample size within a mode below {ESS_PER_CHAIN} per chain for {_names(low)}: the "
            "per-mode intervals are not reliable.", "Draw more ([bayes] draws)."))
    if n_div:
        findings.append(_divergence_finding(n_div, n_draws))
    problems = [p for p, flag in (("R-hat within modes", bad), ("ESS within modes", low), ("divergences", n_div)) if flag]
    if problems:
        return Verdict("diagnostics", f"multimodal: {n_modes} modes; failed: " + ", ".join(problems), False), findings
    return Verdict("diagnostics", f"multimodal: {n_modes} modes, checks pass within each mode (every R-hat ≤ 1.01, "
                   "bulk ESS ≥ 100 per chain, no divergences)", True, "modes"), findings


def _divergence_finding(n_div: int, n_draws: int) -> Finding:
    share = 100 * n_div / max(n_draws, 1)
    # one significant digit below 10 % (0.05 %, 3 %), whole percents above (52 %, 100 %: ".1g" wrote 1e+02)
    shown = f"{share:.0f}" if share >= 9.5 else f"{share:.1g}"
    return Finding(
        f"{n_div} divergent transitions ({shown}% of draws): the sampler could not "
        "follow the posterior's curvature, so part of it may be missing.",
        "Raise [bayes] target_accept (e.g. 0.95 or 0.99); if divergences remain, the model needs a different "
        "parametrisation or stronger priors (e.g. on the scales).")


def _diagnostic_findings(rows: list[DiagnosticRow], n_chains: int, n_div: int | None, n_draws: int,
                         modes: xr.Dataset | None = None, tree: xr.DataTree | None = None) -> tuple[Verdict, list[Finding]]:
    """The diagnostics verdict: over all chains, or within each mode when ``modes`` (a multimodal
    ``posterior_modes`` group) is given."""
    if modes is not None:
        return _within_mode_findings(modes, n_div, n_draws, tree)
    findings = []
    relabelled = any(np.isfinite(r.rhat_relabelled) for r in rows)
    rhat_of = (lambda r: r.rhat_relabelled) if relabelled else (lambda r: r.rhat)
    ess_of = (lambda r: r.ess_relabelled) if relabelled else (lambda r: r.ess_bulk)
    raw_bad = [r.label for r in rows if r.rhat > RHAT_LIMIT]
    bad = [r.label for r in rows if rhat_of(r) > RHAT_LIMIT]
    low = [r.label for r in rows if ess_of(r) < ESS_PER_CHAIN * n_chains]
    if bad:
        findings.append(Finding(
            f"R-hat above {RHAT_LIMIT} for {_names(bad)}{' even after relabelling' if relabelled else ''}: "
            "the chains disagree, so they have not all found the same posterior (different modes, or too few draws).",
            "Look at the trace and rank plots and the label-switching section; run more tuning and draws "
            "([bayes] tune, draws), start the chains from different EM optima, and do not report one mean per "
            "component while chains sit in different modes."))
    elif raw_bad:
        findings.append(Finding(
            f"R-hat above {RHAT_LIMIT} for the raw draws of {_names(raw_bad)}, caused by label switching: after "
            "relabelling every R-hat is at most 1.01.",
            "Read per-component summaries from the relabelled draws (as this report does); the raw per-component "
            "means average over labellings and mean nothing."))
    if low:
        findings.append(Finding(
            f"Effective sample size below {ESS_PER_CHAIN * n_chains} ({ESS_PER_CHAIN} per chain) for {_names(low)}: "
            "the intervals and their digits are not reliable.",
            "Draw more ([bayes] draws), or reparametrise if the chains move slowly."))
    if n_div:
        findings.append(_divergence_finding(n_div, n_draws))
    problems = [p for p, flag in (("R-hat", bad), ("ESS", low), ("divergences", n_div)) if flag]
    text = ("passed: every R-hat ≤ 1.01, bulk ESS ≥ 100 per chain, no divergences" if not problems
            else "failed: " + ", ".join(problems))
    if relabelled and not problems:
        text += " (relabelled draws)"
    return Verdict("diagnostics", text, not problems), findings


def _names(labels: list[str], limit: int = 6) -> str:
    return ", ".join(labels[:limit]) + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def _label_switching(ls: xr.Dataset | None, per_mode: bool = False) -> tuple[Verdict, list[Finding]]:
    """The label-switching verdict; with ``per_mode`` (the run summarised each mode separately) distinct
    modes are a finding, explained with the diagnostics, not a failure."""
    if ls is None:
        return Verdict("label switching", "not checked (no label-switching results)", None), []
    seen = attr_flag(ls, "label_switching", False)
    modes = attr_flag(ls, "distinct_modes", False)
    method = ls.attrs.get("method", "?")
    changed, total = ls.attrs.get("n_changed"), ls.attrs.get("n_draws_total")
    if seen:
        text = "seen"
        if "n_switches" in ls:
            switches = int(np.sum(ls["n_switches"].values))
            text += f": {switches} switch{'' if switches == 1 else 'es'} within chains"
        if changed is not None:
            text += f"; {changed}{f' of {total}' if total is not None else ''} draws relabelled ({method})"
    else:
        text = f"not seen ({method})"
    findings = []
    if modes and per_mode:
        text += "; distinct modes, summarised per mode"
        return Verdict("label switching", text, None, "modes"), findings
    if modes:
        text += "; distinct modes"
        findings.append(Finding(
            "The posterior has genuinely different modes, not only relabelled copies of one answer: the chains "
            "settled in different explanations of the data, and EM's single answer shows only one of them.",
            "Report the modes separately (label-switching section, with their shares); consider another number of "
            "components, or more informative priors."))
    return Verdict("label switching", text, False if modes else None,
                   "modes" if modes else ("seen" if seen else "none")), findings


def _em_findings(tree: xr.DataTree, em: xr.Dataset | None) -> list[Finding]:
    findings = []
    if em is not None and not attr_flag(em, "converged", True):
        findings.append(Finding(
            f"EM stopped after {em.attrs.get('n_iter', '?')} iterations without converging: its answer is not yet a "
            "maximum of the likelihood.", "Raise [em] max_iter, or loosen [em] tol."))
    restarts = group(tree, "em_restarts")
    if restarts is not None and "converged" in restarts:
        n_bad = int(np.sum(np.asarray(restarts["converged"].values) == 0))
        if n_bad:
            findings.append(Finding(f"{n_bad} of {restarts.sizes['restart']} EM restarts did not converge.",
                                    "Raise [em] max_iter; the best restart is still used if it converged."))
    if em is not None and restarts is not None and "n_reached_best" in em.attrs:
        reached, starts = int(em.attrs["n_reached_best"]), int(em.attrs.get("n_starts", restarts.sizes["restart"]))
        target = int(em.attrs.get("reach_best", 1))
        if reached <= 1 or (reached < target and attr_flag(em, "restart_budget_spent", False)):
            findings.append(Finding(
                f"Only {reached} of {starts} EM starts reached the best log-likelihood"
                f"{f' ({target} were asked for)' if target > reached else ''}: a better optimum may exist that no "
                "start found, and the estimates, the chains' starting points and the comparison would then all use "
                "a local optimum.",
                "Raise [em] max_init (and n_init), or try another [em] init; if the best is a component on a few "
                "points, use fewer components."))
    degenerate = str(em.attrs.get("degenerate", "") or "") if em is not None else ""
    if degenerate:
        # the family's own account (emvsbayes.gaussian: too few points, or a covariance singular but for reg_covar)
        findings.append(Finding(
            f"EM's answer is {degenerate}; its log-likelihood, and the BIC and AIC built on it, reward that "
            "collapse.",
            "Use fewer components, or a covariance that shares variances (spherical or tied); or leave out a "
            "column the components' members do not vary on."))
    failed = int(em.attrs.get("n_failed_restarts", 0) or 0) if em is not None else 0
    if failed:
        findings.append(Finding(
            f"{failed} EM restarts failed ({em.attrs.get('failure', '')}).",
            "A component collapsed onto too few points: raise [em] reg_covar, use fewer components, or standardise the data."))
    info = group(tree, "em_information")
    if info is not None and attr_flag(info, "singular", False):
        findings.append(Finding(
            # the reason says what happened: the information singular at a boundary, or too large to compute
            f"EM gives no standard errors or Wald intervals here: {info.attrs.get('reason') or 'the observed information is singular'}.",
            "Use the bootstrap or posterior intervals instead; a component on the boundary or nearly empty often "
            "means K is too large."))
    return findings


def _degenerate_choice_findings(tree: xr.DataTree) -> list[Finding]:
    choice = group(tree, "model_choice")
    if choice is None or "degenerate" not in choice:
        return []
    flagged = [int(k) for k, flag in zip(choice["K"].values, choice["degenerate"].values) if flag == 1]
    if not flagged:
        return []
    names = {"bic": "BIC", "aic": "AIC", "icl": "ICL", "elpd_loo": "elpd_loo", "log_evidence": "the evidence"}
    won = [f"{names[name]} (K = {choice.attrs[f'degenerate_best_by_{name}']})" for name in names
           if f"degenerate_best_by_{name}" in choice.attrs]
    text = (f"Model choice: EM's answer for K = {', '.join(map(str, flagged))} has a component that is no cluster: "
            f"it holds fewer than {choice.attrs.get('min_component_points', 'the needed')} expected points, too few to "
            "estimate its covariance (a spike), or its covariance is singular but for reg_covar (its members do not "
            "vary along some direction)")
    text += (f"; it would be best by {', '.join(won)}, so the best is chosen among the other K." if won else ".")
    return [Finding(text, "Do not choose K by a degenerate fit; read the best non-degenerate K, or give the "
                          "components a stronger prior on their scales.")]


def _pareto_findings(tree: xr.DataTree) -> list[Finding]:
    choice = group(tree, "model_choice")
    if choice is None or "n_pareto_k_bad" not in choice:
        return []
    bad = [(k, int(n)) for k, n in zip(choice["K"].values, choice["n_pareto_k_bad"].values) if np.isfinite(n) and n > 0]
    if not bad:
        return []
    return [Finding(
        "PSIS-LOO is unreliable (Pareto k > 0.7) for " + "; ".join(f"K = {k}: {n} observations" for k, n in bad)
        + ": their elpd_loo can be badly off.",
        "Do not choose K by elpd_loo alone where k is high; use K-fold cross-validation or moment matching, "
        "and compare with BIC/ICL.")]


def build_summary(tree: xr.DataTree, *, params: list[ParamRow] | None = None,
                  diagnostics: list[DiagnosticRow] | None = None) -> Summary:
    """The card's facts, verdicts and warnings (``params``/``diagnostics`` reuse rows already computed)."""
    spec = root_json(tree, "spec", {}) or {}
    spec = spec if isinstance(spec, dict) else {}
    em = group(tree, "em")
    posterior = group(tree, "posterior")
    facts = [("model", _model_text(spec, em, tree.attrs.get("model_description"))), ("data", _data_text(group(tree, "data")))]
    if em is not None:
        facts.append(("EM", _em_text(tree, em)))
    if posterior is not None:
        facts.append(("sampler", _sampler_text(posterior)))
    verdicts: list[Verdict] = []
    warnings = _em_findings(tree, em)
    if posterior is not None:
        params = parameter_rows(tree) if params is None else params
        diagnostics = diagnostic_rows(tree) if diagnostics is None else diagnostics
        modes = multimodal(tree)
        # the warnings name parameters as the page's tables do (theta[A], mu[2, 最大攻速]), not as stored
        params = [replace(r, label=readable_label(tree, r.label)) for r in params]
        diagnostics = [replace(r, label=readable_label(tree, r.label)) for r in diagnostics]
        verdicts.append(_agreement(params, interval_prob(tree),
                                   int(modes.attrs.get("main_mode", 0)) if modes is not None else None))
        verdict, findings = _diagnostic_findings(diagnostics, posterior.sizes.get("chain", 1), n_divergent(tree),
                                                 posterior.sizes.get("chain", 1) * posterior.sizes.get("draw", 1),
                                                 modes, tree)
        verdicts.append(verdict)
        warnings += findings
        verdict, findings = _label_switching(group(tree, "label_switching"), per_mode=modes is not None)
        verdicts.append(verdict)
        warnings += findings
    warnings += _degenerate_choice_findings(tree)
    warnings += _pareto_findings(tree)
    title = str(tree.attrs.get("title") or tree.attrs.get("spec_name") or "emvsbayes report")
    return Summary(title, facts, verdicts, warnings)


def verdict_mark(verdict: Verdict) -> str:
    return verdict.mark or {True: "ok", False: "CHECK", None: "–"}[verdict.ok]


def summary_card_text(tree: xr.DataTree, width: int = 100) -> str:
    """The summary card as a plain-text table for the terminal (no control characters)."""
    summary = build_summary(tree)
    label_width = max(len(label) for label, _ in summary.facts + [(v.topic, "") for v in summary.verdicts])

    def row(label: str, text: str, mark: str = "") -> list[str]:
        lead = f"{plain(label):<{label_width}}  " + (f"{mark:<5} " if mark else "")
        return textwrap.wrap(plain(text), width=width, initial_indent=lead,
                             subsequent_indent=" " * len(lead)) or [lead.rstrip()]

    lines = [plain(summary.title), "=" * min(width, max(len(plain(summary.title)), 10))]
    for label, text in summary.facts:
        lines += row(label, text)
    if summary.verdicts:
        lines.append("")
        for verdict in summary.verdicts:
            lines += row(verdict.topic, verdict.text, verdict_mark(verdict))
    lines.append("")
    if not summary.warnings:
        lines.append("No warnings.")
    for i, finding in enumerate(summary.warnings, 1):
        lines += textwrap.wrap(plain(finding.problem), width=width, initial_indent=f"warning {i}: ",
                               subsequent_indent="  ")
        lines += textwrap.wrap("what to do: " + plain(finding.advice), width=width, initial_indent="  ",
                               subsequent_indent="  ")
    return "\n".join(lines)
