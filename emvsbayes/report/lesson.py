"""The coin report told in the EM lesson's order: the first guess, hard EM, soft EM, what each ends with,
and the log-likelihood surface both walk on.

Everything here is read from the results file (``data``, ``em``, ``em_trace``, ``em_hard``,
``em_hard_trace``, ``exact``); the surface is recomputed from the ``data`` group with numpy, because a
two-coin model has only two parameters and the whole picture costs a few thousand evaluations.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.special import gammaln, xlog1py, xlogy

from emvsbayes.report import figures
from emvsbayes.report.markup import cell, decimals_for, esc, figure, fixed, fmt, paragraph, subsection
from emvsbayes.report.params import component_names
from emvsbayes.report.sections import _coin_steps  # the step tables live with the EM section

#: grid points per axis of the surface; the ends stay off 0 and 1, where a coin that made a head or a
#: tail has log-likelihood -inf
SURFACE_POINTS = 161


def surface_grid(n_points: int = SURFACE_POINTS) -> np.ndarray:
    return np.linspace(0.0025, 0.9975, n_points)


def loglik_surface(heads: np.ndarray, tosses: np.ndarray, grid: np.ndarray, w=(0.5, 0.5)) -> np.ndarray:
    """Observed-data log-likelihood of a two-coin mixture at every pair of ``grid`` values.

    ``heads``, ``tosses``: (n_sets,). Returns (len(grid), len(grid)); entry ``[i, j]`` is at
    theta_first = grid[i], theta_second = grid[j], the coin labels summed out with weights ``w``
    (the same quantity as ``em.attrs["observed_loglik"]``, binomial coefficients included).
    """
    heads = np.asarray(heads, dtype=float)[:, None]
    tosses = np.asarray(tosses, dtype=float)[:, None]
    grid = np.asarray(grid, dtype=float)[None, :]
    log_choose = gammaln(tosses + 1) - gammaln(heads + 1) - gammaln(tosses - heads + 1)
    per_theta = log_choose + xlogy(heads, grid) + xlog1py(tosses - heads, -grid)  # (n_sets, n_grid)
    log_w = np.log(np.asarray(w, dtype=float))
    both = np.logaddexp(log_w[0] + per_theta[:, :, None], log_w[1] + per_theta[:, None, :])
    return both.sum(axis=0)


def _coin_data(ctx) -> tuple[xr.Dataset, xr.Dataset] | None:
    data, em = ctx.group("data"), ctx.group("em")
    if data is None or em is None or "heads" not in data or "theta" not in em:
        return None
    return data, em


def description_block(ctx) -> str:
    """The spec's ``description`` as the page's opening paragraph (user text, so escaped)."""
    text = ctx.spec.get("description") if isinstance(ctx.spec, dict) else None
    return f"<p class='description'>{esc(text)}</p>" if isinstance(text, str) and text.strip() else ""


def lesson_section(ctx) -> str:
    """Hard EM then soft EM step by step, what each ends with side by side, the surface they climb."""
    found = _coin_data(ctx)
    if found is None:
        return ""
    data, em = found
    k = em.sizes["component"]
    names = component_names(ctx.tree, k)
    hard_trace, soft_trace = ctx.group("em_hard_trace"), ctx.group("em_trace")
    parts = [_guess(data, hard_trace if hard_trace is not None else soft_trace, names)]
    if _has_steps(hard_trace):
        parts.append("<h3>Hard EM, step by step</h3>" + paragraph(HARD_EM_TEXT) + _coin_steps(hard_trace, data, names=names))
    if _has_steps(soft_trace):
        parts.append("<h3>Soft EM, step by step</h3>" + paragraph(SOFT_EM_TEXT) + _coin_steps(soft_trace, data, names=names))
    parts.append(_hard_vs_soft(ctx, data, em, names))
    if k == 2:
        parts.append(_surface(ctx, data, em, names))
    return "".join(parts)


def _has_steps(trace: xr.Dataset | None) -> bool:
    return trace is not None and "resp" in trace and "expected_heads" in trace


HARD_EM_TEXT = (
    "E-step: each experiment is given wholly to the coin under which its heads and tails are most likely "
    "(one coin per experiment). M-step: each coin's chance of heads becomes the heads it was given divided by "
    "the tosses it was given. This is k-means' cousin: k-means gives each point to its nearest centre and moves "
    "each centre to the mean of its points; hard EM gives each experiment to its most likely coin and moves each "
    "coin's theta to the share of heads among its experiments. Like k-means it stops as soon as no experiment "
    "changes coin, and what it maximises is the likelihood with the assignments treated as known (the "
    "log-likelihood in its iteration captions is that one, not the observed-data log-likelihood).")

SOFT_EM_TEXT = (
    "E-step: each experiment is shared between the coins in proportion to how likely its heads and tails are "
    "under each (Bayes' rule with the coins' weights), so an experiment 60 % likely to come from coin B gives "
    "B 60 % of its heads and tails. M-step: each coin's theta becomes its expected heads over its expected "
    "tosses. Each round raises the observed-data log-likelihood (the coins summed out) or leaves it unchanged.")


def _assignment_text(resp: np.ndarray, names: list[str]) -> str:
    return ", ".join(names[int(c)] for c in np.argmax(resp, axis=1))


def _guess(data: xr.Dataset, trace: xr.Dataset | None, names: list[str]) -> str:
    if trace is None or "resp" not in trace:
        return ""
    theta0 = trace["theta"].values[0]
    start = ", ".join(f"theta_{names[c]} = {fmt(t)}" for c, t in enumerate(theta0))
    guess = _assignment_text(trace["resp"].values[0], names)
    sets = ", ".join(str(s) for s in data["set"].values)
    return subsection("The first guess", paragraph(
        f"EM starts from {start}. Under these values the most likely coin for each experiment ({sets}) is: "
        f"{guess}. That is the first guess: hard EM's first M-step uses exactly these assignments, soft EM uses the "
        "probabilities behind them instead."))


def _aligned_to(reference: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The permutation of ``theta``'s components closest to ``reference`` (two components only)."""
    if len(theta) != 2:
        return np.arange(len(theta))
    straight = np.abs(theta - reference).sum()
    swapped = np.abs(theta[::-1] - reference).sum()
    return np.array([1, 0]) if swapped < straight else np.array([0, 1])


def _set_name(label) -> str:
    """A set's label as the page names it: bare numbers read as "set 2", given names as they are."""
    text = str(label)
    return f"set {text}" if text.isdigit() else text


def _hard_vs_soft(ctx, data: xr.Dataset, em: xr.Dataset, names: list[str]) -> str:
    hard = ctx.group("em_hard")
    if hard is None or "resp" not in hard or "resp" not in em:
        return ""
    soft_theta, soft_resp = em["theta"].values, em["resp"].values
    order = _aligned_to(soft_theta, hard["theta"].values)
    hard_theta, hard_resp = hard["theta"].values[order], hard["resp"].values[:, order]
    rows, differing = [], []
    for c, name in enumerate(names):
        rows.append((f"theta_{name}, chance of heads of coin {name}", fixed(hard_theta[c], 4), fixed(soft_theta[c], 4),
                     False))
    for i, label in enumerate(data["set"].values):
        h, n = int(data["heads"].values[i]), int(data["tosses"].values[i])
        hard_coin, soft_coin = int(np.argmax(hard_resp[i])), int(np.argmax(soft_resp[i]))
        probs = " / ".join(f"P({names[c]}) {fixed(soft_resp[i, c], 2)}" for c in range(len(names)))
        differs = hard_coin != soft_coin
        if differs:
            differing.append(f"{_set_name(label)} ({h} heads of {n})")
        rows.append((f"{_set_name(label)}: {h} heads of {n}", f"coin {names[hard_coin]}",
                     f"closer to coin {names[soft_coin]} ({probs})", differs))
    soft_ll = em.attrs.get("observed_loglik", float("nan"))
    hard_ll = hard.attrs.get("observed_loglik", float("nan"))
    places = decimals_for([hard_ll, soft_ll], 6)
    rows.append(("observed-data log-likelihood of the answer", fixed(hard_ll, places), fixed(soft_ll, places), False))
    highlight = ' class="differs" data-differs="1"'
    body = "".join(f"<tr{highlight if differs else ''}><th scope='row'>{cell(q)}</th><td>{cell(a)}</td>"
                   f"<td>{cell(b)}</td></tr>" for q, a, b, differs in rows)
    table_html = (f"<table class='side-by-side'><thead><tr><th>what it ends with</th><th>hard EM</th><th>soft EM</th>"
                  f"</tr></thead><tbody>{body}</tbody></table>")
    swapped = "" if np.array_equal(order, np.arange(len(order))) else (
        " Hard EM's coins are shown renamed to match soft EM's (it ended on the mirror labelling).")
    if differing:
        verdict = (f"They disagree on {', '.join(differing)} (highlighted): soft EM leaves "
                   f"{'it' if len(differing) == 1 else 'them'} shared between the coins and leans the other way, "
                   "while hard EM gives each experiment wholly to one coin, fits the thetas to that choice, and "
                   "under those thetas the same choice wins again: a fixed point that confirms itself.")
    else:
        verdict = "Both end with the same most likely coin for every experiment; they differ only in the thetas."
    better = ("Soft EM's answer has the higher observed-data log-likelihood: it maximises that quantity, hard EM "
              "maximises the likelihood with the assignments treated as known." if np.isfinite(soft_ll)
              and np.isfinite(hard_ll) and soft_ll > hard_ll + 1e-9 else "")
    return subsection("What each ends with, side by side", table_html + paragraph(" ".join(
        t for t in (verdict, better + swapped) if t)))


def _surface(ctx, data: xr.Dataset, em: xr.Dataset, names: list[str]) -> str:
    grid = surface_grid()
    w = em["w"].values if "w" in em else np.full(2, 0.5)
    surface = loglik_surface(data["heads"].values, data["tosses"].values, grid, w)
    paths = []
    for label, trace_name in (("hard EM", "em_hard_trace"), ("soft EM", "em_trace")):
        trace = ctx.group(trace_name)
        if trace is not None and "theta" in trace:
            paths.append((label, trace["theta"].values))
    modes, mode_source = _posterior_modes(ctx, em, grid, surface)
    svg = figures.loglik_surface(grid, surface, paths, modes, names)
    weights = "equal, fixed weights" if np.allclose(w, w[0]) else f"EM's weights ({', '.join(fmt(x, 3) for x in w)})"
    caption = (f"Observed-data log-likelihood over (theta_{names[0]}, theta_{names[1]}) with {weights}; shades show how "
               f"far below its maximum it is; right, a close-up of the paths. Lines: each EM's path from its start "
               f"(square) to its answer (dot), one dot per round. Stars: the two modes of the posterior ({mode_source}). The dashed diagonal is where the coins are equal.")
    text = paragraph(
        f"Swapping the names {names[0]} and {names[1]} changes nothing in the data's likelihood, so the surface is a "
        "mirror image of itself across the diagonal, and so is the posterior under a prior that treats the coins "
        "alike: every peak has a twin with the labels exchanged. EM climbs to one of them, decided by where it "
        "started; a sampler may visit both, and then per-coin averages of its draws mix the two coins. Relabelling "
        "renames the coins in each draw so that every draw sits on EM's side of the diagonal; it changes no value "
        "of the likelihood, only which coin is called which.")
    return subsection("The log-likelihood surface and the two EM paths", figure(svg, "loglik-surface", caption) + text)


def _posterior_modes(ctx, em: xr.Dataset, grid: np.ndarray, surface: np.ndarray) -> tuple[np.ndarray, str]:
    """The posterior's two mirror modes: from the exact joint density when the run wrote one, else EM's
    answer and its mirror (with a flat prior and fixed weights the posterior is the likelihood)."""
    exact = ctx.group("exact")
    if exact is not None and "joint_density" in exact:
        density = exact["joint_density"].values
        i, j = np.unravel_index(np.nanargmax(density), density.shape)
        mode = np.array([exact["grid_x"].values[i], exact["grid_y"].values[j]])
        source = "highest point of the exact posterior density and its mirror"
    else:
        mode = np.asarray(em["theta"].values, dtype=float)
        source = "EM's answer and its mirror"
    em_theta = np.asarray(em["theta"].values, dtype=float)
    if np.abs(mode[::-1] - em_theta).sum() < np.abs(mode - em_theta).sum():
        mode = mode[::-1]  # the mode on EM's side first: the figure's close-up frames EM's paths and it
    return np.array([mode, mode[::-1]]), source
