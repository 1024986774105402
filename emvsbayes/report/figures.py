"""Figures for the report, each returned as an inline SVG string.

arviz-plots draws what it has a plot for (trace, rank); matplotlib draws the rest. Every function
takes the results tree (or groups of it) and nothing from the fitting code.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display; figures become SVG text
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def to_svg(fig) -> str:
    """Serialise a matplotlib figure as an inline ``<svg>`` element (no XML prolog) and close it."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def arviz_figure(plot_function, tree, **kwargs) -> str:
    """Render an arviz-plots plot with the matplotlib backend as SVG."""
    pc = plot_function(tree, backend="matplotlib", **kwargs)
    fig = pc.viz["figure"].item()
    return to_svg(fig)


def joint_theta(posterior_theta: np.ndarray, em_points: list[tuple[str, np.ndarray]], exact=None) -> str:
    """Draws of (theta_0, theta_1) with EM answers and their mirror images marked.

    ``posterior_theta`` (S, 2). A symmetric mixture's posterior is symmetric about the diagonal: the two
    modes are the same answer with the coins' names swapped.
    """
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    if exact is not None and "joint_density" in exact:
        density = exact["joint_density"].values
        gx, gy = exact["grid_x"].values, exact["grid_y"].values
        ax.contour(gx, gy, density.T, levels=6, colors="0.55", linewidths=0.7)
    ax.scatter(posterior_theta[:, 0], posterior_theta[:, 1], s=3, alpha=0.25, color=COLORS[0], label="posterior draws", rasterized=False)
    markers = ("*", "D", "s", "^")
    for i, (label, point) in enumerate(em_points):
        ax.scatter([point[0]], [point[1]], marker=markers[i % 4], s=140, color=COLORS[1 + i], edgecolor="k", zorder=5, label=label)
        ax.scatter([point[1]], [point[0]], marker=markers[i % 4], s=140, facecolor="none", edgecolor=COLORS[1 + i], zorder=5,
                   label=f"{label}, coins renamed")
    ax.plot([0, 1], [0, 1], color="0.8", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="theta[0]", ylabel="theta[1]", aspect="equal")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return to_svg(fig)


def loglik_paths(paths: list[tuple[str, np.ndarray]]) -> str:
    """EM's objective per iteration for each run (soft, hard, each restart)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    for i, (label, values) in enumerate(paths):
        ax.plot(np.arange(len(values)), values, marker="o", ms=2.5, lw=1, color=COLORS[i % len(COLORS)], label=label)
    ax.set(xlabel="iteration", ylabel="log-likelihood")
    if len(paths) <= 8:
        ax.legend(fontsize=7, frameon=False)
    return to_svg(fig)


def theta_marginals(draws: np.ndarray, exact=None, em_values=None, labels=("smallest theta", "largest theta")) -> str:
    """Histograms of the sorted thetas (label-invariant) against the exact densities."""
    k = draws.shape[1]
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    for j in range(k):
        ax.hist(draws[:, j], bins=60, range=(0, 1), density=True, alpha=0.35, color=COLORS[j],
                label=f"{labels[j] if j < len(labels) else f'rank {j}'}: draws")
        if exact is not None:
            ax.plot(exact["grid"].values, exact["theta_sorted_density"].values[j], color=COLORS[j], lw=1.4,
                    label="exact" if j == 0 else None)
        if em_values is not None:
            ax.axvline(em_values[j], color=COLORS[j], ls="--", lw=1, label="EM" if j == 0 else None)
    ax.set(xlim=(0, 1), xlabel="theta (sorted within each draw)", ylabel="density")
    ax.legend(fontsize=7, frameon=False)
    return to_svg(fig)
