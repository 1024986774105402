"""Figures for the report, each returned as an inline SVG string.

arviz-plots draws what it has a plot for (trace, rank); matplotlib draws the rest. Every function
takes arrays or groups of the results tree, never the fitting objects. Text in the SVG (axis labels,
tick labels from user column names) is escaped by matplotlib's SVG writer; :func:`to_svg` also
rounds coordinates and drops unreferenced ids so that many figures fit one page.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
from collections.abc import Iterator

import matplotlib

# No matplotlib.use("Agg") here: in a notebook it would switch the user's own backend (the inline one) for
# the rest of the session, and their plots would stop showing. Figures here are only saved as SVG, which any
# backend does; the command line and the page workers run with MPLBACKEND=Agg (emvsbayes.cli, .workers).
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import warnings

# Labels in other scripts (the heroes data's Chinese column names) are kept as text in the SVG and
# drawn by the browser's fonts; matplotlib's own font only lacks them for measuring.
warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)  # noqa: E402
from matplotlib.backends.backend_svg import RendererSVG  # noqa: E402
from matplotlib.colors import BoundaryNorm, to_rgb  # noqa: E402

# text.parse_math off: titles, labels and legends carry users' strings (column names, titles, labels),
# and a "$...$" in them would otherwise be parsed as mathtext (an error after the whole fit, or a
# formula in place of the name). No text of ours uses mathtext.
plt.rcParams.update({"svg.fonttype": "none", "font.size": 10, "legend.fontsize": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
                     "text.parse_math": False})
# Bidirectional overrides and isolates (U+202E ...) from a user's string would reorder the figure's text.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

#: width of a full-width figure in inches: 720 pt, 960 px, the page's content width, so text drawn at 9-10 pt
#: reads at the page's own size (a 6-inch figure scaled to the page would blow its text up, left alone it
#: takes half the width)
PAGE_WIDTH = 10.0

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
#: most points drawn in one scatter (the rest would only add bytes, not information)
MAX_POINTS = 1500

_figure_counter = itertools.count()
#: the part of the page being drawn (:func:`new_part`): ids are salted by part and number within it
_part_name = ""


def new_page() -> None:
    """Restart figure numbering, so the same results render to the same page (ids are salted by number)."""
    global _figure_counter, _part_name
    _figure_counter = itertools.count()
    _part_name = ""
    _svg_text_metrics.clear()


def new_part(name: str) -> None:
    """Number the figures of one part of the page (a section) from zero, salted by the part's name: a part
    draws the same bytes whichever process draws it and whatever was drawn before it (the page workers,
    :mod:`emvsbayes.report.workers`, draw a page's parts in two processes)."""
    global _figure_counter, _part_name
    _figure_counter = itertools.count()
    _part_name = name


#: (text, math flag, font properties) -> (width, height, descent) as the SVG renderer measures them,
#: for the page being rendered (cleared by :func:`new_page`). matplotlib caches metrics per renderer
#: only, and ``savefig(bbox_inches="tight")`` makes two renderers per figure; the same tick labels
#: ("0.2", "0.4", ...) recur in every figure, and each measurement lays the string out in FreeType at
#: about 0.2-0.5 ms: a third of a lecture page's measuring was repeats. The SVG renderer's measure
#: depends on the string and the font properties alone (it lays the text out at a fixed size and
#: scales), so a repeat gets the very numbers the first measurement got.
_svg_text_metrics: dict = {}
_measure_svg_text = RendererSVG.get_text_width_height_descent


def _svg_text_width_height_descent(renderer, s, prop, ismath):
    key = (s, ismath, tuple(vars(prop).items()))  # the font properties' own hash is of the same values
    try:
        return _svg_text_metrics[key]
    except (KeyError, TypeError):  # TypeError: a property value that cannot be hashed; measured each time
        metrics = _measure_svg_text(renderer, s, prop, ismath)
    try:
        if len(_svg_text_metrics) < 100_000:
            _svg_text_metrics[key] = metrics
    except TypeError:
        pass
    return metrics


if getattr(_measure_svg_text, "__module__", "") == "matplotlib.backends.backend_svg":
    RendererSVG.get_text_width_height_descent = _svg_text_width_height_descent
_NUMBER = re.compile(r"-?\d+\.\d{2,}")
_ID = re.compile(r'\sid="([^"]+)"')


def color(k: int) -> str:
    return COLORS[k % len(COLORS)]


def _round_numbers(match: re.Match) -> str:
    text = f"{float(match.group(0)):.1f}"
    return text[:-2] if text.endswith(".0") else text


def compact_svg(text: str) -> str:
    """Round coordinates to 0.1 px, collapse whitespace in paths, drop ids nothing refers to."""
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'(\sd="[^"]*")', lambda m: re.sub(r"\s+", " ", _NUMBER.sub(_round_numbers, m.group(1))), text)
    text = re.sub(r'(\s(?:x|y|width|height|transform|points)="[^"]*")', lambda m: _NUMBER.sub(_round_numbers, m.group(1)), text)
    referenced = set(re.findall(r'(?:href="#|url\(#)([^")]+)', text))
    text = _ID.sub(lambda m: m.group(0) if m.group(1) in referenced else "", text)
    return re.sub(r">\s+<", "><", text)


@contextlib.contextmanager
def drawing() -> Iterator[None]:
    """Draw figures for a page inside a caller's session without touching it: pyplot's interactive mode off
    (an interactive GUI session would open a window for each figure), figures of the caller left open."""
    with plt.ioff():
        yield


def to_svg(fig) -> str:
    """Serialise a matplotlib figure as a compact inline ``<svg>`` element and close it.

    Each figure gets its own hash salt: ids (clip paths, markers) are then unique across the page and
    the same results render to the same bytes.
    """
    buffer = io.StringIO()
    fig.draw = _without_layout_draw(fig.draw)  # an instance attribute: gone with the figure
    salt = f"{_part_name}-fig{next(_figure_counter)}" if _part_name else f"fig{next(_figure_counter)}"
    with plt.rc_context({"svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = _BIDI.sub("", buffer.getvalue())
    return compact_svg(text[text.index("<svg"):])


def _without_layout_draw(draw):
    """``Figure.draw`` without the extra pass ``savefig(bbox_inches="tight")`` makes before the real one.

    That pass draws the whole figure with the renderer's drawing methods switched off (matplotlib's
    ``_draw_disabled`` puts no-op ``draw_*`` methods on the renderer) so that the layout is up to date
    for measuring the tight box; for our figures (no layout engine) measuring the box brings the same
    layout up to date itself: every figure of the lecture, two-coin, Old Faithful, earthquake mixture and
    earthquake HMM pages came out byte for byte the same without the pass, which took 7-12 % of each
    page's rendering. A draw that really draws is passed on."""

    def draw_unless_layout_only(renderer):
        target = getattr(renderer, "_renderer", renderer)  # the SVG renderer inside matplotlib's mixed-mode one
        if "draw_path" in vars(target):  # drawing switched off: the layout-only pass
            return None
        return draw(renderer)

    return draw_unless_layout_only


def message_figure(text: str) -> str:
    """A small figure that says why the intended one could not be drawn (the page never fails for it)."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 0.8))
    ax.axis("off")
    ax.text(0.0, 0.5, text, va="center", ha="left", fontsize=9, color="#8a5a00", wrap=True)
    return to_svg(fig)


def arviz_figure(plot_function, tree, *, width: float = 10.0, row_height: float = 2.0, what: str = "this plot",
                 ylabel: str | None = None, marker_size: float | None = None, **kwargs) -> str:
    """Render an arviz-plots plot with the matplotlib backend as SVG, with a legend of the chains.

    Draws of a degenerate posterior (a scale collapsed to ~1e-14) defeat arviz-plots' density
    estimates; the page then says so in its own words in place of the figure instead of failing
    (the library's error text would mean nothing to a reader).
    """
    before = set(plt.get_fignums())
    try:
        pc = plot_function(tree, backend="matplotlib", **kwargs)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError):
        for number in set(plt.get_fignums()) - before:  # what the failed plot opened, not a caller's figures
            plt.close(number)
        return message_figure(f"{what} could not be drawn for these draws: a parameter has (nearly) the same value "
                              "in every draw, so there is nothing to rank or smooth. The tables below still list it.")
    fig = pc.viz["figure"].item()
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
    rows = len({round(ax.get_position().y0, 3) for ax in axes})
    fig.set_size_inches(width, max(2.6, min(rows * row_height + 0.6, 30)))
    left = min((round(ax.get_position().x0, 3) for ax in axes), default=0.0)
    for ax in axes:
        ax.tick_params(labelsize=9, labelleft=True)
        if marker_size is not None:  # a rank plot marks every suspicious point; at arviz's size they hide the lines
            for collection in ax.collections:
                if hasattr(collection, "set_sizes"):
                    collection.set_sizes([marker_size])
        if ax.get_title():  # lifted clear of the test result written under it (a rank plot's p)
            # arviz writes "w\n0" where the rest of the page writes w[0]
            ax.set_title(re.sub(r"^([^\n\[]+)\n(.+)$", r"\1[\2]", ax.get_title()), pad=14, fontsize=10)
        _lift_p_value(ax)
        if ylabel and round(ax.get_position().x0, 3) == left:  # once per row, at its left
            ax.set_ylabel(ylabel, fontsize=9)
    if _chain_legend(pc, fig):
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()), h_pad=1.6)
    else:
        fig.tight_layout(h_pad=1.6)
    return to_svg(fig)


#: level of the rank plots' multi-chain uniformity test (arviz-plots' default: 1 - envelope_prob = 0.01)
RANK_ALPHA = 0.01
#: the text arviz-plots writes inside a rank plot's panel, p to two decimals: "p=0.00(α=0.01) "
_P_VALUE = re.compile(r"^\s*p=([0-9.]+)\s*\(α=([0-9.]+)\)\s*$")


def _lift_p_value(ax) -> None:
    """Move a rank plot's uniformity-test result from inside the panel (where arviz-plots writes it, over
    the chains' lines near the top) to the band between the panel and its title, red when the test fails."""
    for text in list(ax.texts):
        found = _P_VALUE.match(text.get_text())
        if not found:
            continue
        p, alpha = float(found.group(1)), float(found.group(2))
        text.remove()
        # arviz gives p to two decimals: "0.00" is below any level it uses, "0.01" at a level of 0.01 may be
        # either side of it (0.0098 or 0.0104), so it is said to be at the level, not called failed or passed
        failed, passed = p + 0.005 <= alpha + 1e-12, p - 0.005 >= alpha - 1e-12
        value = "p < 0.005" if p == 0.0 else f"p = {found.group(1)}"
        shown = (f"{value}: chains differ" if failed else value if passed
                 else f"p ≈ {found.group(1)}, at the test's level")
        ax.annotate(shown,
                    xy=(0.5, 1.0), xycoords="axes fraction", xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8.5, color="#b00020" if failed else "0.3")


def _chain_legend(pc, fig) -> bool:
    """One legend of the chains across the top, with whatever tells them apart in this plot (colour in a
    rank plot, line style in a trace plot, where colour tells the components apart)."""
    try:
        pc.add_legend("chain")
    except (ValueError, KeyError, TypeError):
        return False
    if not fig.legends:
        return False
    made = fig.legends[-1]
    handles, texts = list(made.legend_handles), [f"chain {t.get_text()}" for t in made.get_texts()]
    made.remove()
    styles = {handle.get_linestyle() for handle in handles if hasattr(handle, "get_linestyle")}
    if len(styles) > 1:  # chains told apart by line style: drawn in neutral grey, not a component's colour
        for handle in handles:
            handle.set_color("0.25")
    fig.legend(handles, texts, loc="upper center", ncol=len(handles), frameon=False, fontsize=10,
               bbox_to_anchor=(0.5, 1.0), handlelength=3)
    return True


def thin_indices(n: int, limit: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """At most ``limit`` indices of ``n``, the same ones every time (sorted)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def membership_colors(probs: np.ndarray) -> np.ndarray:
    """Each point's colour: the components' colours mixed by its membership probabilities."""
    k = probs.shape[1]
    palette = np.array([to_rgb(color(c)) for c in range(k)])
    return np.clip(probs @ palette, 0, 1)


def _component_legend(ax, k: int, title: str) -> None:
    for c in range(k):
        ax.scatter([], [], color=color(c), s=12, label=f"component {c}")
    ax.legend(frameon=False, title=title, title_fontsize=9, loc="best")


# --- the data -----------------------------------------------------------------------------------------


def histogram_1d(x: np.ndarray, probs: np.ndarray | None, xlabel: str, densities=None, bins=None,
                 ylabel: str = "density") -> str:
    """Histogram of one feature; a rug of the points coloured by membership; EM's component densities."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 4.2))
    bins = min(60, max(10, int(np.sqrt(len(x)) * 2))) if bins is None else bins
    ax.hist(x, bins=bins, density=True, color="0.85", edgecolor="0.6", lw=0.5)
    idx = thin_indices(len(x))
    cols = membership_colors(probs[idx]) if probs is not None else "0.3"
    ax.scatter(x[idx], np.zeros(len(idx)), marker="|", s=80, c=cols, lw=1)
    if densities is not None:
        grid, per_component = densities
        for c, dens in enumerate(per_component):
            ax.plot(grid, dens, color=color(c), lw=1.2)
        ax.plot(grid, per_component.sum(axis=0), color="k", lw=1, ls="--", label="mixture (EM)")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if probs is not None:
        _component_legend(ax, probs.shape[1], "membership")
    return to_svg(fig)


#: covariance ellipses are drawn at this many standard deviations (in 2-D about 86 % of a component's points)
ELLIPSE_SDS = 2.0


def _ellipse(ax, mean: np.ndarray, cov: np.ndarray, colour, **style) -> None:
    """The contour at :data:`ELLIPSE_SDS` Mahalanobis units of a 2-D Gaussian."""
    values, vectors = np.linalg.eigh(0.5 * (cov + cov.T))
    angle = np.linspace(0, 2 * np.pi, 90)
    circle = np.stack([np.cos(angle), np.sin(angle)])
    points = mean[:, None] + vectors @ (ELLIPSE_SDS * np.sqrt(np.clip(values, 0, None))[:, None] * circle)
    ax.plot(points[0], points[1], color=colour, **style)


def scatter_2d(x: np.ndarray, probs: np.ndarray | None, labels: tuple[str, str], centres=None,
               em_ellipses=None, draw_ellipses=None) -> str:
    """Points coloured by membership; EM's means (crosses) and, when given, covariance ellipses of EM
    (``em_ellipses``: means (K, 2), covariances (K, 2, 2)) and of posterior draws (``draw_ellipses``:
    (S, K, 2) and (S, K, 2, 2), relabelled so component k is EM's k)."""
    fig, ax = plt.subplots(figsize=(8.0, 6.6))
    if draw_ellipses is not None:
        for mus, covs in zip(*draw_ellipses):
            for c, (m, v) in enumerate(zip(mus, covs)):
                _ellipse(ax, m, v, color(c), lw=0.6, alpha=0.25)
    _scatter(ax, x, probs, centres)
    if em_ellipses is not None:
        for c, (m, v) in enumerate(zip(*em_ellipses)):
            _ellipse(ax, m, v, "k", lw=2.4, zorder=4)
            _ellipse(ax, m, v, color(c), lw=1.4, zorder=4)
    ax.set(xlabel=labels[0], ylabel=labels[1])
    if probs is not None:
        _component_legend(ax, probs.shape[1], "membership")
    return to_svg(fig)


def _scatter(ax, x2: np.ndarray, probs, centres=None) -> None:
    idx = thin_indices(len(x2))
    cols = membership_colors(probs[idx]) if probs is not None else "0.3"
    ax.scatter(x2[idx, 0], x2[idx, 1], s=7 if len(idx) > 400 else 22, c=cols, alpha=0.8, lw=0)
    if centres is not None:
        for c, centre in enumerate(centres):
            ax.scatter([centre[0]], [centre[1]], marker="X", s=90, color=color(c), edgecolor="k", zorder=5)


def pair_plot(x: np.ndarray, probs: np.ndarray | None, labels: list[str], centres=None) -> str:
    """Every pair of features (lower triangle), histograms on the diagonal."""
    d = x.shape[1]
    fig, axes = plt.subplots(d, d, figsize=(min(PAGE_WIDTH, 2.6 * d + 0.6), min(PAGE_WIDTH, 2.6 * d + 0.6) - 0.2), squeeze=False)
    for i, j in np.ndindex(d, d):
        ax = axes[i, j]
        if j > i:
            ax.axis("off")
        elif i == j:
            ax.hist(x[:, i], bins=30, color="0.7")
        else:
            _scatter(ax, x[:, [j, i]], probs, None if centres is None else centres[:, [j, i]])
        ax.tick_params(labelsize=8)
        if i == d - 1:
            ax.set_xlabel(labels[j], fontsize=9)
        if j == 0:
            ax.set_ylabel(labels[i], fontsize=9)
    return to_svg(fig)


def projection(x: np.ndarray, probs: np.ndarray | None, centres=None, names: list[str] | None = None) -> str:
    """The first two principal components of the (centred) data; with ``names`` (one per row, at most
    :data:`MAX_NAMED_POINTS`) each point carries its name, placed by :func:`_place_names`."""
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    share = s**2 / np.sum(s**2)
    proj = (x - mean) @ vt[:2].T
    centres_proj = None if centres is None else (centres - mean) @ vt[:2].T
    labels = (f"principal component 1 ({share[0]:.0%} of variance)", f"principal component 2 ({share[1]:.0%} of variance)")
    if names is None or len(names) > MAX_NAMED_POINTS:
        return scatter_2d(proj, probs, labels, centres_proj)
    # full page width and taller: the names need the room more than the points do
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 7.4))
    _scatter(ax, proj, probs, centres_proj)
    ax.set(xlabel=labels[0], ylabel=labels[1])
    if probs is not None:
        _component_legend(ax, probs.shape[1], "membership")
    _place_names(ax, proj, names, centres_proj)
    return to_svg(fig)


#: most points named in a scatter (beyond it names cover the points they name)
MAX_NAMED_POINTS = 150
#: size of a point's name (points); the page shows it at about 10 px
NAME_SIZE = 7.5


def _text_extent(text: str, size_px: float) -> tuple[float, float]:
    """Width and height in pixels of ``text`` at ``size_px``, estimated: a CJK (full-width) character is one
    em wide, others about 0.6 em. The browser draws these names in its own fonts (matplotlib lacks CJK
    glyphs, so its own measurement would be wrong)."""
    wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
    return size_px * (wide + 0.6 * (len(text) - wide)) + 2.0, size_px * 1.25


def _overlap(a: tuple[float, float, float, float], b: np.ndarray) -> np.ndarray:
    """Overlap area of box ``a`` (x0, y0, x1, y1) with each box of ``b`` (n, 4)."""
    if len(b) == 0:
        return np.zeros(0)
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    return w * h


def _place_names(ax, xy: np.ndarray, names: list[str], centres: np.ndarray | None = None) -> None:
    """Write each point's name next to it where it covers the fewest other names and points.

    Greedy: the most crowded points choose first among eight positions around the point, then eight
    further out (joined to the point by a thin line); a position's cost is the area it shares with names
    already placed (heavily), with other points' markers, and outside the axes. Deterministic, so the same
    results give the same page.
    """
    ax.margins(0.08)
    ax.autoscale_view()
    fig = ax.figure
    size_px = NAME_SIZE * fig.dpi / 72
    pix = ax.transData.transform(xy)
    frame = ax.get_window_extent()
    marker = 4.0  # a point's half-width in pixels, with a little air
    points = np.column_stack([pix - marker, pix + marker])
    if centres is not None:  # the component means' crosses are bigger than a point
        cross = ax.transData.transform(centres)
        points = np.vstack([points, np.column_stack([cross - 2.5 * marker, cross + 2.5 * marker])])
    crowding = np.array([(np.hypot(*(pix - p).T) < 6 * size_px).sum() for p in pix])
    gap = marker + 1.5
    directions = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)]
    placed = np.zeros((0, 4))
    for i in np.argsort(-crowding, kind="stable"):
        width, height = _text_extent(names[i], size_px)
        best = None
        for reach in (1.0, 2.6):
            for dx, dy in directions:
                # the box's anchor corner sits ``gap * reach`` from the point in direction (dx, dy)
                x0 = pix[i, 0] + dx * gap * reach - (width if dx < 0 else width / 2 if dx == 0 else 0)
                y0 = pix[i, 1] + dy * gap * reach - (height if dy < 0 else height / 2 if dy == 0 else 0)
                box = (x0, y0, x0 + width, y0 + height)
                others = np.delete(points, i, axis=0)  # (the crosses sit after the points, never deleted)
                outside = (max(0, frame.x0 - box[0]) + max(0, box[2] - frame.x1)
                           + max(0, frame.y0 - box[1]) + max(0, box[3] - frame.y1)) * height
                cost = (20 * _overlap(box, placed).sum() + 3 * _overlap(box, others).sum() + 50 * outside
                        + (reach - 1) * 40)  # nearer positions preferred, other things equal
                if best is None or cost < best[0]:
                    best = (cost, box, reach)
        _, box, reach = best
        placed = np.vstack([placed, box])
        centre = ax.transData.inverted().transform(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
        ax.text(*centre, names[i], fontsize=NAME_SIZE, ha="center", va="center", color="0.15", zorder=6)
        if reach > 1:
            nearest = np.clip(pix[i], box[:2], box[2:])
            end = ax.transData.inverted().transform(nearest)
            ax.plot([xy[i, 0], end[0]], [xy[i, 1], end[1]], color="0.55", lw=0.5, zorder=2)


# --- EM -----------------------------------------------------------------------------------------------


def loglik_paths(paths: list[tuple[str, np.ndarray]]) -> str:
    """EM's objective per iteration for each run (soft, hard, each restart): whole iterations on the x axis,
    log-likelihoods written out in full (an offset such as "+1.2e3" above the axis reads as a misprint)."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 4.0))
    for i, (label, values) in enumerate(paths):
        values = np.asarray(values, dtype=float)
        ax.plot(np.arange(len(values)), values, marker="o" if len(values) < 60 else None, ms=3, lw=1.2,
                color=color(i), label=label if i < 8 else None)
    _whole_numbers_plain(ax)
    ax.set(xlabel="iteration", ylabel="log-likelihood")
    ax.legend(frameon=False)
    return to_svg(fig)


def _whole_numbers_plain(ax, n_ticks: int | None = None) -> None:
    """Integer ticks on x (iterations, restarts) and y values written in full, without an offset;
    ``n_ticks``: at most that many x ticks (a narrow panel's labels would run into each other)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=n_ticks or "auto", integer=True))
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")


def moved(values: np.ndarray, tol: float = 1e-9) -> bool:
    """Did a run's log-likelihood change by more than ``tol`` (relative) between its first and last iteration."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return len(values) > 1 and float(np.ptp(values)) > tol * max(1.0, float(np.max(np.abs(values))))


def restart_outcomes(start: np.ndarray | None, final: np.ndarray, optimum: np.ndarray | None) -> str:
    """Each restart's log-likelihood at its start and at convergence, coloured by the optimum it reached."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.8))
    n = len(final)
    cols = [color(int(o)) if optimum is not None and o >= 0 else "0.4" for o in (optimum if optimum is not None else [0] * n)]
    if start is not None:
        for r in range(n):
            ax.plot([r, r], [start[r], final[r]], color="0.8", lw=1, zorder=1)
        ax.scatter(np.arange(n), start, marker="o", facecolor="none", edgecolor="0.5", s=18, label="start")
    ax.scatter(np.arange(n), final, c=cols, s=26, zorder=3, label="converged (colour: optimum)")
    _whole_numbers_plain(ax)
    ax.set(xlabel="restart", ylabel="log-likelihood")
    ax.legend(frameon=False)
    return to_svg(fig)


def parameter_paths(trace: dict[str, np.ndarray], labels: dict[str, list[str]]) -> str:
    """Each parameter's value per EM iteration; one panel per parameter name, one line per element."""
    names = list(trace)
    fig, axes = plt.subplots(1, len(names), figsize=(PAGE_WIDTH, 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = trace[name].reshape(trace[name].shape[0], -1)
        for j in range(values.shape[1]):
            ax.plot(values[:, j], lw=1.1, color=color(j), label=labels[name][j])
        _whole_numbers_plain(ax, n_ticks=max(3, 12 // len(names)))
        ax.set(xlabel="iteration", title=name if values.shape[1] <= 6 else f"{name} ({values.shape[1]} lines)")
        if values.shape[1] <= 6:  # a legend of dozens of lines would hide them
            # under the panel, not in it: inside a third of the page's width it covers the lines it names
            ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8.5, handlelength=1.5)
    return to_svg(fig)


# --- Bayes ----------------------------------------------------------------------------------------------


def joint_pair(draws: np.ndarray, chains: np.ndarray | None, points: list[tuple[str, np.ndarray]],
               labels: tuple[str, str], *, limits=None, contour=None) -> str:
    """Draws of two exchangeable parameters (x, y) with point estimates and their mirror images.

    ``draws`` (S, 2). A symmetric mixture's posterior is symmetric about the diagonal: the modes are
    the same answer with the components' names swapped.
    """
    fig, ax = plt.subplots(figsize=(7.0, 5.8))
    if contour is not None:
        gx, gy, density = contour
        ax.contour(gx, gy, density.T, levels=6, colors="0.55", linewidths=0.7)
    idx = thin_indices(len(draws))
    if chains is not None:
        for c in np.unique(chains):
            sel = idx[chains[idx] == c]
            ax.scatter(draws[sel, 0], draws[sel, 1], s=3, alpha=0.35, color=color(int(c)), label=f"chain {c}")
    else:
        ax.scatter(draws[idx, 0], draws[idx, 1], s=3, alpha=0.3, color=COLORS[0], label="posterior draws")
    markers = ("*", "D", "s", "^")
    for i, (label, point) in enumerate(points):
        ax.scatter([point[0]], [point[1]], marker=markers[i % 4], s=140, color="k" if i == 0 else color(4 + i),
                   edgecolor="k", zorder=5, label=label)
        ax.scatter([point[1]], [point[0]], marker=markers[i % 4], s=140, facecolor="none",
                   edgecolor="k" if i == 0 else color(4 + i), zorder=5, label=f"{label}, renamed")
    lo, hi = limits if limits is not None else (float(np.min(draws)), float(np.max(draws)))
    ax.plot([lo, hi], [lo, hi], color="0.8", lw=0.8, ls="--")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=labels[0], ylabel=labels[1], aspect="equal")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return to_svg(fig)


def theta_marginals(draws: np.ndarray, exact=None, em_values=None, labels=("smallest theta", "largest theta")) -> str:
    """Histograms of the sorted thetas (label-invariant) against the exact densities."""
    k = draws.shape[1]
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 4.0))
    for j in range(k):
        ax.hist(draws[:, j], bins=60, range=(0, 1), density=True, alpha=0.35, color=color(j),
                label=f"{labels[j] if j < len(labels) else f'rank {j}'}: draws")
        if exact is not None:
            ax.plot(exact["grid"].values, exact["theta_sorted_density"].values[j], color=color(j), lw=1.4,
                    label="exact" if j == 0 else None)
        if em_values is not None:
            ax.axvline(em_values[j], color=color(j), ls="--", lw=1, label="EM" if j == 0 else None)
    ax.set(xlim=(0, 1), xlabel="theta (sorted within each draw)", ylabel="density")
    ax.legend(frameon=False)
    return to_svg(fig)


def permutation_timeline(perms: np.ndarray, names: list[str] | None = None) -> str:
    """Which labelling each draw of each chain was in: one coloured band per chain, a colour per permutation.

    ``perms`` (chain, draw, K). Drawn as runs (broken bars), so a chain that never switches is one bar.
    ``names``: the components' names (the page's, e.g. A and B), so the legend reads as the tables do.
    """
    n_chains, n_draws, _ = perms.shape
    # codes in sorted order of the permutations, so the identity always gets the first colour
    unique, codes = np.unique(perms.reshape(-1, perms.shape[-1]), axis=0, return_inverse=True)
    codes = codes.reshape(n_chains, n_draws)
    keys = {tuple(int(v) for v in perm): code for code, perm in enumerate(unique)}
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 0.5 * n_chains + 1.2))
    for c in range(n_chains):
        change = np.flatnonzero(np.diff(codes[c])) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [n_draws]])
        for code in np.unique(codes[c]):
            runs = [(s, e - s) for s, e in zip(starts, ends) if codes[c, s] == code]
            ax.broken_barh(runs, (c - 0.4, 0.8), color=color(int(code)))
    for perm, code in keys.items():
        ax.bar([0], [0], color=color(code), label=f"relabelling ({', '.join(names[v] if names else str(v) for v in perm)})")
    ax.set(xlabel="draw", ylabel="chain", yticks=range(n_chains), xlim=(0, n_draws))
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=min(4, len(keys)))
    return to_svg(fig)


# --- comparison -------------------------------------------------------------------------------------------


def forest(labels: list[str], sources: list[tuple[str, np.ndarray, np.ndarray | None]]) -> str:
    """Intervals per parameter, one row per parameter and one offset line per source.

    ``sources``: (name, centre (P,), intervals (P, 2) or None); NaN entries are left out.
    Parameters on different scales get their own panel per parameter name (the part before ``[``).
    """
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        # the parameter's name: before "[" (mu[0, x]) or before "," (a readable element label such as
        # "transition, state 1 -> state 2"), so the elements of one parameter share a panel
        groups.setdefault(re.split(r"[\[,]", label, maxsplit=1)[0].strip(), []).append(i)
    heights = [len(v) for v in groups.values()]
    fig, axes = plt.subplots(len(groups), 1, figsize=(PAGE_WIDTH, (0.36 if sum(heights) <= 20 else 0.21) * sum(heights) + 0.5 * len(groups) + 0.9),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    n_sources = len(sources)
    offsets = np.linspace(-0.27, 0.27, n_sources) if n_sources > 1 else np.zeros(1)
    for ax, (name, rows) in zip(axes[:, 0], groups.items()):
        for s, (source, centre, interval) in enumerate(sources):
            y = np.arange(len(rows)) + offsets[s]
            c = np.asarray(centre, dtype=float)[rows]
            if interval is not None:
                iv = np.asarray(interval, dtype=float)[rows]
                ok = np.isfinite(iv).all(axis=1)
                ax.hlines(y[ok], iv[ok, 0], iv[ok, 1], color=color(s), lw=2)
            ok = np.isfinite(c)
            ax.scatter(c[ok], y[ok], color=color(s), s=16, zorder=3, label=source if ax is axes[0, 0] else None)
        ax.set_yticks(np.arange(len(rows)), [labels[i] for i in rows], fontsize=9)
        ax.invert_yaxis()
        ax.grid(axis="x", color="0.92")
    axes[0, 0].legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(4, n_sources))
    return to_svg(fig)


def model_choice(ks: np.ndarray, criteria: dict[str, np.ndarray]) -> str:
    """Criteria against K, all as "lower is better" deviances (elpd shown as -2 elpd)."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 4.0))
    for i, (name, values) in enumerate(criteria.items()):
        values = np.asarray(values, dtype=float)
        if np.isfinite(values).any():
            # criteria that coincide (BIC and ICL when every assignment is certain) would hide each other:
            # each its own marker and dashes, the earlier ones wider underneath
            ax.plot(ks, values, marker="osD^vP"[i % 6], ms=7 - i, lw=2.6 - 0.3 * i, ls=("-", "--", ":", "-.")[i % 4],
                    color=color(i), label=name, zorder=2 + i)
    ax.set(xlabel="K (components)", ylabel="criterion (lower is better)", xticks=list(ks))
    ax.legend(frameon=False)
    return to_svg(fig)


def occupied_components(ks: np.ndarray, prob: np.ndarray, mcse: np.ndarray, chosen: dict[str, int]) -> str:
    """Bars of P(K+ = k | data) with ± 2 Monte Carlo standard errors; each criterion's chosen K marked above
    its bar (``chosen``: criterion -> K)."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.6))
    err = np.where(np.isfinite(mcse), 2 * mcse, 0.0)
    ax.bar(ks, prob, color=color(0), width=0.6, yerr=err, capsize=3, ecolor="0.3", label="P(K+ = k | data)")
    by_k: dict[int, list[str]] = {}
    for name, k in chosen.items():
        by_k.setdefault(k, []).append(name)
    for i, (k, names) in enumerate(sorted(by_k.items())):
        if k in set(int(v) for v in ks):
            height = float(prob[list(ks).index(k)])
            ax.annotate(", ".join(names) + " choice", (k, height), xytext=(0, 14), textcoords="offset points",
                        ha="center", fontsize=9, color=color(1), arrowprops=dict(arrowstyle="->", color=color(1)))
    ax.set(xlabel="occupied components K+", ylabel="posterior probability", xticks=list(ks), ylim=(0, 1.15))
    ax.legend(frameon=False, loc="upper right")
    return to_svg(fig)


#: how far below the maximum each filled band of the log-likelihood surface ends
SURFACE_DROPS = (0.5, 1, 2, 4, 8, 16, 32, 64)


def loglik_surface(grid: np.ndarray, surface: np.ndarray, paths: list[tuple[str, np.ndarray]], modes: np.ndarray,
                   names: list[str]) -> str:
    """A two-coin log-likelihood surface with EM paths and the posterior's mirror modes: the whole square,
    and beside it a close-up of the paths (EM often moves a few hundredths, invisible at full scale).

    ``surface[i, j]`` is at (grid[i], grid[j]); ``paths`` are (label, (n_iter, 2) thetas); ``modes`` (m, 2).
    Bands are drops below the maximum, so the picture reads the same for any data size.
    """
    drop = np.maximum(surface - np.nanmax(surface), -2 * SURFACE_DROPS[-1])
    levels = [-2 * SURFACE_DROPS[-1], *(-d for d in SURFACE_DROPS[::-1]), 0.0]
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 5.8), gridspec_kw={"wspace": 0.3})
    visited = np.concatenate([thetas for _, thetas in paths] + [modes[:1]]) if paths else modes
    lo, hi = visited.min(axis=0), visited.max(axis=0)
    half = max(0.04, 0.6 * float(np.max(hi - lo)))
    centre = (lo + hi) / 2
    windows = (((0.0, 1.0), (0.0, 1.0)), tuple((max(0.0, c - half), min(1.0, c + half)) for c in centre))
    path_colours = ("#d62728", "#111111", "#9467bd", "#ff7f0e")
    for ax, (xlim, ylim), title in zip(axes, windows, ("the whole square", "close-up of the EM paths")):
        # one distinct colour per band (a linear scale would paint every band within 8 of the top alike)
        filled = ax.contourf(grid, grid, drop.T, levels=levels, cmap="YlGnBu_r",
                             norm=BoundaryNorm(levels, plt.get_cmap("YlGnBu_r").N))
        ax.contour(grid, grid, drop.T, levels=levels[1:-1], colors="0.3", linewidths=0.5)
        ax.scatter(modes[:, 0], modes[:, 1], marker="*", s=420, facecolor="none", edgecolor="#b8860b", linewidths=2,
                   zorder=5, label="posterior modes (mirror images)")
        for i, (label, thetas) in enumerate(paths):
            col = path_colours[i % len(path_colours)]
            ax.plot(thetas[:, 0], thetas[:, 1], color=col, lw=1.8, marker="o", ms=3, zorder=6, label=f"{label} path")
            ax.scatter([thetas[0, 0]], [thetas[0, 1]], marker="s", s=80, facecolor="white", edgecolor=col, zorder=7,
                       label=f"{label} start")
            ax.scatter([thetas[-1, 0]], [thetas[-1, 1]], marker="o", s=90, color=col, edgecolor="white", zorder=7,
                       label=f"{label} answer")
        ax.plot([0, 1], [0, 1], color="0.2", lw=0.9, ls="--")
        ax.set(xlim=xlim, ylim=ylim, aspect="equal", title=title,
               xlabel=f"theta_{names[0]} (chance of heads of coin {names[0]})",
               ylabel=f"theta_{names[1]} (chance of heads of coin {names[1]})")
    bar = fig.colorbar(filled, ax=axes, shrink=0.75, pad=0.02)
    bar.set_label("log-likelihood below its maximum")
    axes[1].legend(loc="upper center", bbox_to_anchor=(-0.2, -0.14), ncol=4, fontsize=9, frameon=False)
    return to_svg(fig)
