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
``posterior_relabelled`` or ``posterior`` (``transition`` over chain, draw). Each function returns an inline
SVG string, as :mod:`emvsbayes.report.figures` does.
"""

from __future__ import annotations

import numpy as np


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


def series_figure(tree) -> str:
    """The series coloured by decoded state (the most probable state per time point) over a stacked band of
    the state probabilities."""
    import matplotlib.pyplot as plt

    from emvsbayes.report.figures import color, to_svg

    data = _group(tree, "data")
    y = data["y"].values
    t = _time_axis(data)
    probs, source = state_probabilities(tree)
    k = probs.shape[1]
    decoded = probs.argmax(axis=1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 4.2), sharex=True, height_ratios=(2.2, 1))
    top.plot(t, y, color="#999999", linewidth=0.8, zorder=1)
    for state in range(k):
        mask = decoded == state
        top.scatter(t[mask], y[mask], s=12, color=color(state), label=f"state {state}", zorder=2)
    top.set_ylabel(data.attrs.get("column", "y") or "y")
    top.legend(loc="upper left", fontsize=7, ncol=k, frameon=False)
    top.set_title(f"Series coloured by decoded state ({source} state probabilities)")
    bottom.stackplot(t, probs.T, colors=[color(state) for state in range(k)], step="mid", alpha=0.85)
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("P(state)")
    bottom.set_xlabel(data.attrs.get("time_column", "") or "time")
    return to_svg(fig)


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


def transition_figure(tree, prob: float = 0.89) -> str:
    """Two heat maps: EM's transition matrix, and the posterior mean with its ``prob`` interval per entry."""
    import matplotlib.pyplot as plt

    from emvsbayes.report.figures import to_svg

    summary = transition_summary(tree, prob)
    k = summary["em"].shape[0]
    has_posterior = not np.all(np.isnan(summary["mean"]))
    panels = [("EM", summary["em"], None)]
    if has_posterior:
        panels.append((f"posterior mean [{prob:.0%} interval]", summary["mean"], (summary["lower"], summary["upper"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.6, 3.2), squeeze=False)
    for ax, (title, matrix, interval) in zip(axes[0], panels, strict=True):
        ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                text = f"{matrix[i, j]:.2f}"
                if interval is not None:
                    text += f"\n[{interval[0][i, j]:.2f}, {interval[1][i, j]:.2f}]"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > 0.6 else "black")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xlabel("to state")
        ax.set_ylabel("from state")
        ax.set_title(title, fontsize=9)
    return to_svg(fig)


def decoding_figure(tree) -> str:
    """The Viterbi path (the single most probable sequence of states) against posterior decoding (the most
    probable state at each time point on its own); where they differ is marked."""
    import matplotlib.pyplot as plt

    from emvsbayes.report.figures import to_svg

    data = _group(tree, "data")
    decoding = _group(tree, "decoding")
    t = _time_axis(data)
    path = decoding["viterbi"].values
    probs, source = state_probabilities(tree)
    marginal = probs.argmax(axis=1)
    differ = path != marginal
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    ax.step(t, path, where="mid", color="#333333", linewidth=1.4, label="Viterbi path")
    ax.step(t, marginal + 0.08, where="mid", color="#d62728", linewidth=1.0, linestyle="--",
            label=f"posterior decoding ({source})")
    if differ.any():
        ax.scatter(t[differ], path[differ], marker="x", color="#d62728", s=18, zorder=3,
                   label=f"differ ({int(differ.sum())} of {differ.size})")
    k = probs.shape[1]
    ax.set_yticks(range(k))
    ax.set_ylabel("state")
    ax.set_xlabel(data.attrs.get("time_column", "") or "time")
    ax.legend(loc="upper left", fontsize=7, frameon=False, ncol=3)
    return to_svg(fig)
