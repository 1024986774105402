"""The whole report page, from a results tree alone.

The page is one self-contained file: inline CSS and SVG, no scripts, and a Content-Security-Policy
that forbids loading anything (so even a string that escaped escaping could not run or fetch).
Sections live in :mod:`emvsbayes.report.sections`; each returns "" when its data are absent. The page is
drawn part by part (:data:`emvsbayes.report.page.PART_NAMES`), each part the same bytes whichever process
draws it, and put together by :func:`emvsbayes.report.page.assemble_page`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import xarray as xr

from emvsbayes.report import figures, ladder, lesson, sections
from emvsbayes.report.page import CONTENT_SECURITY_POLICY, PART_NAMES, SECTION_TITLES, assemble_page

__all__ = ["CONTENT_SECURITY_POLICY", "SECTION_FUNCTIONS", "render_parts", "render_report", "warm_up"]

#: the function that draws each section of :data:`~emvsbayes.report.page.SECTION_TITLES`, by anchor
SECTION_FUNCTIONS = {
    "summary": sections.summary_section,
    "data": sections.data_section,
    "lesson": lesson.lesson_section,
    "em": sections.em_section,
    "bayes": sections.bayes_section,
    "comparison": sections.comparison_section,
    "label-switching": sections.label_switching_section,
    "ladder": ladder.ladder_section,
    "partition": ladder.partition_section,
}
assert tuple(SECTION_FUNCTIONS) == tuple(anchor for anchor, _ in SECTION_TITLES)


def render_parts(tree: xr.DataTree, names: Iterable[str] = PART_NAMES,
                 extra_timings: Mapping[str, object] | None = None) -> dict[str, object]:
    """The parts ``names`` of the page of ``tree``, by name (see :func:`~emvsbayes.report.page.assemble_page`)."""
    figures.new_page()
    ctx = sections.Context(tree)
    parts: dict[str, object] = {}
    with figures.drawing():
        for name in names:
            figures.new_part(name)
            if name in SECTION_FUNCTIONS:
                parts[name] = SECTION_FUNCTIONS[name](ctx)
            elif name == "family":
                parts[name] = sections.family_sections(ctx)
            elif name == "description":
                parts[name] = lesson.description_block(ctx)
            elif name == "reproducibility":
                parts[name] = sections.reproducibility_section(ctx, extra_timings)
            else:
                raise ValueError(f"no part {name!r} of the page; the parts are {', '.join(PART_NAMES)}")
    return parts


def render_report(tree: xr.DataTree, extra_timings=None) -> str:
    """The whole page as a string, drawn in this process."""
    return assemble_page(tree, render_parts(tree, PART_NAMES, extra_timings))


def warm_up() -> None:
    """Draw a small figure to SVG and throw it away: loads the fonts and matplotlib's per-process caches, so a
    page worker (:mod:`emvsbayes.report.workers`) does this while the run still fits, not when the page is
    wanted. Changes no page: the figure numbering and text measures of a page start with the page."""
    import io

    import arviz_stats  # noqa: F401  the summary's and diagnostics' R-hat and ESS
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0.0, 1.0], [0.0, 1.0])
    ax.contour(np.outer(np.arange(3.0), np.arange(3.0)))  # the contour code the lesson's surface uses
    ax.set_title("warm-up")
    ax.set_xlabel("x")
    fig.savefig(io.StringIO(), format="svg", bbox_inches="tight")
    plt.close(fig)
