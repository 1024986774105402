"""Figures of the hidden Markov model family, drawn from a results tree only (never from fitting objects).

- :func:`series_figure`: the series over time, each point coloured by its decoded state, above the state
  probabilities per time point as a stacked band (the posterior's when the tree has them, else EM's smoothed
  ones);
- :func:`transition_figure`: EM's transition matrix beside the posterior's mean and interval per entry;
- :func:`decoding_figure`: the Viterbi path against posterior (marginal, per-time-point) decoding, the time
  points where they differ marked.

Groups read: ``data`` (``y`` over ``time``), ``em`` (``transition``), ``decoding`` (``viterbi``,
``smoothed``, ``posterior_decoding``: :meth:`emvsbayes.hmm.family.HMMFamily.extra_groups`) and, when present,
``posterior_membership`` (``membership_relabelled`` or ``membership`` over (``time``, ``component``)) and
``posterior_relabelled`` or ``posterior`` (``transition`` over chain, draw). Each function returns a matplotlib
figure; :func:`report_sections` gathers them, the transition table and the note on what an independent mixture
misses into the family's sections of the page (:class:`emvsbayes.family.ReportSection`). The report serialises
the figures and escapes the texts, so nothing here imports :mod:`emvsbayes.report`.
"""

from __future__ import annotations

import numpy as np

from emvsbayes.family import ReportFigure, ReportParagraph, ReportSection, ReportTable, percent

#: the report's component colours when the caller gives none (matplotlib's default cycle)
DEFAULT_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _color(colors, state: int) -> str:
    return colors[state % len(colors)]


def state_name(state: int) -> str:
    """States are numbered from 1 on the page (index 0 is "state 1")."""
    return f"state {state + 1}"


def _group(tree, name: str):
    """The Dataset of group ``name`` of a DataTree or a mapping of Datasets, or None."""
    try:
        node = tree[name]
    except KeyError:
        return None
    return node.to_dataset() if hasattr(node, "to_dataset") else node


def state_probabilities(tree) -> tuple[np.ndarray, str]:
    """(P(z_t = k), (T, K); where from): the relabelled posterior's when present, else EM's smoothed ones."""
    membership = _group(tree, "posterior_membership")
    if membership is not None:
        for name in ("membership_relabelled", "membership"):
            if name in membership:
                return membership[name].transpose("time", "component").values, "posterior"
    return _group(tree, "decoding")["smoothed"].transpose("time", "component").values, "EM (smoothed)"


def _time_axis(data) -> np.ndarray:
    labels = data["time"].values
    try:
        return labels.astype(float)
    except (TypeError, ValueError):
        return np.arange(labels.size, dtype=float)


def series_figure(tree, colors=DEFAULT_COLORS):
    """The series coloured by decoded state (the most probable state per time point) over a stacked band of
    the state probabilities."""
    import matplotlib.pyplot as plt

    data = _group(tree, "data")
    y = data["y"].values
    t = _time_axis(data)
    probs, source = state_probabilities(tree)
    k = probs.shape[1]
    decoded = probs.argmax(axis=1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11.0, 4.6), sharex=True, height_ratios=(2.2, 1))
    top.plot(t, y, color="#999999", linewidth=0.8, zorder=1)
    for state in range(k):
        mask = decoded == state
        top.scatter(t[mask], y[mask], s=12, color=_color(colors, state), label=state_name(state), zorder=2)
    top.set_ylabel(data.attrs.get("column", "y") or "y")
    # beside the axes, not over the points: where a series is quiet differs from series to series
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    top.set_title(f"Series coloured by decoded state ({source} state probabilities)")
    bottom.stackplot(t, probs.T, colors=[_color(colors, state) for state in range(k)], step="mid", alpha=0.85)
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("P(state)")
    bottom.set_xlabel(data.attrs.get("time_column", "") or "time")
    return fig


def transition_summary(tree, prob: float = 0.89) -> dict[str, np.ndarray]:
    """EM's transition matrix and the posterior's mean, lower and upper equal-tailed ``prob`` bounds per entry
    (each (K, K)); the posterior entries are NaN when the tree has no posterior."""
    em_transition = _group(tree, "em")["transition"].transpose("component", "component_to").values
    out = {"em": em_transition}
    posterior = _group(tree, "posterior_relabelled")
    if posterior is None or "transition" not in posterior:
        posterior = _group(tree, "posterior")
    if posterior is None or "transition" not in posterior:
        nan = np.full(em_transition.shape, np.nan)
        return out | {"mean": nan, "lower": nan, "upper": nan}
    draws = posterior["transition"].transpose(..., "component", "component_to").values
    draws = draws.reshape(-1, *em_transition.shape)
    tail = (1 - prob) / 2
    return out | {"mean": draws.mean(axis=0), "lower": np.quantile(draws, tail, axis=0),
                  "upper": np.quantile(draws, 1 - tail, axis=0)}


def transition_figure(tree, prob: float = 0.89):
    """Two heat maps: EM's transition matrix, and the posterior mean with its ``prob`` interval per entry."""
    import matplotlib.pyplot as plt

    summary = transition_summary(tree, prob)
    k = summary["em"].shape[0]
    has_posterior = not np.all(np.isnan(summary["mean"]))
    panels = [("EM", summary["em"], None)]
    if has_posterior:
        panels.append((f"posterior mean [{prob:.0%} interval]", summary["mean"], (summary["lower"], summary["upper"])))
    # the page's width, as every figure (the square panels keep their aspect, centred in their halves)
    fig, axes = plt.subplots(1, len(panels), figsize=(10.0, 3.4 if k <= 3 else 4.2), squeeze=False)
    for ax, (title, matrix, interval) in zip(axes[0], panels, strict=True):
        # vector cells (pcolormesh), not imshow: an image would be embedded as a raster (a data: PNG) in the SVG
        ax.pcolormesh(np.arange(k + 1) - 0.5, np.arange(k + 1) - 0.5, matrix, vmin=0, vmax=1, cmap="Blues",
                      edgecolors="white", linewidth=1.0)
        ax.set_xlim(-0.5, k - 0.5)
        ax.set_ylim(k - 0.5, -0.5)  # row 1 on top, as a matrix is written
        ax.set_aspect("equal")
        for i in range(k):
            for j in range(k):
                text = f"{matrix[i, j]:.2f}"
                if interval is not None:
                    text += f"\n[{interval[0][i, j]:.2f}, {interval[1][i, j]:.2f}]"
                ax.text(j, i, text, ha="center", va="center", fontsize=9 if k <= 3 else 7,
                        color="white" if matrix[i, j] > 0.6 else "black")
        ax.set_xticks(range(k), [str(state + 1) for state in range(k)])
        ax.set_yticks(range(k), [str(state + 1) for state in range(k)])
        ax.set_xlabel("to state")
        ax.set_ylabel("from state")
        ax.set_title(title, fontsize=9)
    return fig


def decoding_figure(tree):
    """The Viterbi path (the single most probable sequence of states) against posterior decoding (the most
    probable state at each time point on its own); where they differ is marked."""
    import matplotlib.pyplot as plt

    data = _group(tree, "data")
    decoding = _group(tree, "decoding")
    t = _time_axis(data)
    path = decoding["viterbi"].values
    probs, source = state_probabilities(tree)
    marginal = probs.argmax(axis=1)
    differ = path != marginal
    fig, ax = plt.subplots(figsize=(11.0, 2.6))
    ax.step(t, path, where="mid", color="#333333", linewidth=1.4, label="Viterbi path")
    ax.step(t, marginal + 0.08, where="mid", color="#d62728", linewidth=1.0, linestyle="--",
            label=f"most probable state per time point ({source})")
    if differ.any():
        ax.scatter(t[differ], path[differ], marker="x", color="#d62728", s=18, zorder=3,
                   label=f"differ ({int(differ.sum())} of {differ.size})")
    k = probs.shape[1]
    ax.set_yticks(range(k), [str(state + 1) for state in range(k)])
    ax.set_ylabel("state")
    ax.set_xlabel(data.attrs.get("time_column", "") or "time")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, frameon=False, ncol=3)  # above, off the paths
    return fig


# --- the family's sections of the page ------------------------------------------------------------------


def _lag_autocorrelation(y: np.ndarray, lag: int = 1) -> float:
    """Lag-``lag`` autocorrelation; NaN for a constant series (it has none) or one too short."""
    centred = np.asarray(y, dtype=float) - np.mean(y)
    spread = float((centred * centred).sum())
    if spread == 0.0 or len(centred) <= lag:
        return float("nan")
    return float((centred[:-lag] * centred[lag:]).sum() / spread)


def _autocorrelation_words(y: np.ndarray) -> str:
    value = _lag_autocorrelation(y)
    return ("no lag-1 autocorrelation to speak of (its values do not vary)" if np.isnan(value)
            else f"lag-1 autocorrelation {value:.2f}")


def independence_note(tree) -> str:
    """What an independent mixture with the same states misses, in numbers of this series: the persistence
    of the states (EM's chance of staying against the stationary share a mixture would give) and the
    series' lag-1 autocorrelation (zero under any independent mixture)."""
    from emvsbayes.hmm.model import stationary_distribution

    y = _group(tree, "data")["y"].values
    transition = transition_summary(tree)["em"]
    shares = stationary_distribution(transition)
    stays = np.diag(transition)
    per_state = "; ".join(
        f"{state_name(k)}: stays with probability {stays[k]:.2f} (a run of {1 / max(1 - stays[k], 1e-12):.3g} "
        f"time points on average) where an independent mixture would give {shares[k]:.2f} "
        f"({1 / max(1 - shares[k], 1e-12):.3g})" for k in range(stays.size))
    return (f"What an independent mixture misses. A mixture with the same {stays.size} states treats the "
            f"{y.size} time points as exchangeable rows: the state of one says nothing about the next, so the chance "
            f"of staying in a state is only that state's weight (here the share of time the chain spends in it), "
            f"and the series' autocorrelation is zero at every lag; shuffling the time points would not change its "
            f"fit. This series has {_autocorrelation_words(y)}, and EM's chain "
            + (f"keeps its states: {per_state}. The hidden Markov model explains runs of high and low values as "
               f"persistent states, which the mixture can only read as chance." if np.all(stays >= shares) else
               f"does not simply keep its states: {per_state}. Where a state's chance of staying is below its share, "
               f"the chain leaves it sooner than chance would: the series alternates (a low value is followed by a "
               f"high one), a pattern an independent mixture cannot express at all."))


def _transition_table(tree, prob: float) -> ReportTable:
    summary = transition_summary(tree, prob)
    k = summary["em"].shape[0]
    has_posterior = not np.all(np.isnan(summary["mean"]))
    header = ("from", "to", "EM") + (("posterior mean", f"{percent(prob)} interval") if has_posterior else ())
    rows = []
    for i in range(k):
        for j in range(k):
            row = (state_name(i), state_name(j), f"{summary['em'][i, j]:.3f}")
            if has_posterior:
                row += (f"{summary['mean'][i, j]:.3f}", f"[{summary['lower'][i, j]:.3f}, {summary['upper'][i, j]:.3f}]")
            rows.append(row)
    caption = ("Each entry is the probability of moving from one state to another in one time step: EM's "
               "estimate" + (", the posterior mean and its equal-tailed interval (relabelled draws when the run "
                             "relabelled)." if has_posterior else "; the run has no posterior."))
    return ReportTable(header, tuple(rows), caption)


def report_sections(tree, prob: float = 0.89, colors=DEFAULT_COLORS) -> list[ReportSection]:
    """The series, the transition matrix and the decodings as sections of the page (``[]`` when the tree has
    no series or no EM fit)."""
    data, em, decoding = _group(tree, "data"), _group(tree, "em"), _group(tree, "decoding")
    if (data is None or "y" not in data or em is None or "transition" not in em or decoding is None
            or not {"viterbi", "smoothed"} <= set(decoding.data_vars)):
        return []  # not a results file of this family's runner (or a damaged one): the page shows the rest
    y = np.asarray(data["y"].values, dtype=float)
    column = data.attrs.get("column") or "value"
    time_column = data.attrs.get("time_column") or "time"
    labels = [str(v) for v in data["time"].values]
    _, source = state_probabilities(tree)
    overview = (f"Source: {data.attrs.get('source', '?')}; one series of {y.size} time points ({column} by "
                f"{time_column}, {labels[0]} to {labels[-1]}), from {y.min():.4g} to {y.max():.4g}, mean "
                f"{y.mean():.4g}, variance {y.var(ddof=1):.4g}.")
    series = ReportSection("series", "The series and its hidden states", "data", (
        ReportParagraph(overview),
        ReportFigure(series_figure(tree, colors), "hmm-series",
                     f"Top: the series, each time point coloured by its most probable state ({source} state "
                     f"probabilities). Bottom: those probabilities per time point, stacked (the band's width in "
                     f"a colour is the probability of that state).", wide=True),
        ReportParagraph(independence_note(tree)),
    ))
    transitions = ReportSection("transitions", "Transition matrix: EM against the posterior", "comparison", (
        ReportFigure(transition_figure(tree, prob), "hmm-transition",
                     "Rows: the state at one time point; columns: the state at the next. Left: EM; right (when the "
                     f"run has a posterior): the posterior mean with its {percent(prob)} interval per entry.",
                     wide=True),
        _transition_table(tree, prob),
    ))
    path = decoding["viterbi"].values
    marginal = state_probabilities(tree)[0].argmax(axis=1)
    differ = np.flatnonzero(path != marginal)
    where = (f"They differ at {differ.size} of {path.size} time points ({', '.join(labels[i] for i in differ[:12])}"
             f"{', ...' if differ.size > 12 else ''})." if differ.size else f"They agree at all {path.size} time points.")
    decodings = ReportSection("decoding", "Decoding: the Viterbi path against the most probable state per time point",
                              "transitions", (
        ReportFigure(decoding_figure(tree), "hmm-decoding",
                     f"Solid: the Viterbi path, the single most probable sequence of states under EM's fit. Dashed: "
                     f"posterior decoding, the most probable state at each time point on its own ({source} state "
                     f"probabilities), drawn slightly above; crosses mark where they differ.", wide=True),
        ReportParagraph("The two answer different questions: the Viterbi path is the most probable whole sequence, "
                        "so each of its steps is a transition the chain allows; decoding each time point on its own "
                        "can join states by a transition of probability zero or near it, into a sequence no single "
                        f"path would choose. {where}"),
    ))
    return [series, transitions, decodings]
