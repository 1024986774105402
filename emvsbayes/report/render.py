"""The whole report page, from a results tree alone.

The page is one self-contained file: inline CSS and SVG, no scripts, and a Content-Security-Policy
that forbids loading anything (so even a string that escaped escaping could not run or fetch).
Sections live in :mod:`emvsbayes.report.sections`; each returns "" when its data are absent.
"""

from __future__ import annotations

import time
import uuid
from importlib import resources
from pathlib import Path

import xarray as xr

from emvsbayes.report import figures, ladder, lesson, sections
from emvsbayes.report.markup import esc, section
from emvsbayes.results import atomic_write

#: No scripts, no fetches; inline style (ours and the SVGs') and data: images only.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

#: (anchor, title, section function) in page order
SECTIONS = (
    ("summary", "Summary", sections.summary_section),
    ("data", "The data", sections.data_section),
    ("lesson", "EM step by step: the guess, hard EM, soft EM", lesson.lesson_section),
    ("em", "EM: the iteration path", sections.em_section),
    ("bayes", "Bayes: the posterior", sections.bayes_section),
    ("comparison", "EM against the posterior", sections.comparison_section),
    ("label-switching", "Label switching", sections.label_switching_section),
    ("ladder", "The uncertainty ladder: from EM's point to the posterior", ladder.ladder_section),
    ("partition", "Clusters without labels", ladder.partition_section),
)


def render_report(tree: xr.DataTree, extra_timings=None) -> str:
    """The whole page as a string."""
    figures.new_page()
    ctx = sections.Context(tree)
    title = str(tree.attrs.get("title") or tree.attrs.get("spec_name") or "emvsbayes report")
    rendered = [(anchor, heading, function(ctx)) for anchor, heading, function in SECTIONS]
    # The family's own sections, each after the section it names (or before reproducibility if none has
    # that anchor); placed before empty sections are dropped, so "after the data" holds without a data table.
    for anchor, heading, after, html in sections.family_sections(ctx):
        anchors = [a for a, _, _ in rendered]
        at = anchors.index(after) + 1 if after in anchors else len(rendered)
        rendered.insert(at, (anchor, heading, html))
    rendered.append(("reproducibility", "Reproducibility", sections.reproducibility_section(ctx, extra_timings)))
    rendered = [(anchor, heading, body) for anchor, heading, body in rendered if body]
    nav = "".join(f'<a href="#{anchor}">{esc(heading)}</a>' for anchor, heading, _ in rendered)
    body = "".join(section(heading, html, anchor) for anchor, heading, html in rendered)
    css = resources.files("emvsbayes.report").joinpath("style.css").read_text(encoding="utf-8")
    # The generator tag marks the page as ours (a later run may replace it); the results tag names the
    # checksum of the results file it was rendered from, so a page and its results can be matched.
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='generator' content='emvsbayes run'>"
            f"<meta name='emvsbayes-results' content='{esc(tree.attrs.get('checksum', ''))}'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CONTENT_SECURITY_POLICY}\">"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{css}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p class='sub'>EM against the Bayesian posterior · emvsbayes</p>"
            f"<nav>{nav}</nav></header><main>{lesson.description_block(ctx)}{body}</main></body></html>")


def render_report_file(tree: xr.DataTree, path, extra_timings=None) -> Path:
    """Render and write atomically (a crash leaves the previous report, never half a page). The page
    shows how long rendering it took, next to the run's own stages (:func:`render_report` alone is
    deterministic: same results, same page)."""
    started = time.perf_counter()
    # A token no page contains stands in for the rendering time until it is known.
    token = f"render-seconds-{uuid.uuid4().hex}"
    page = render_report(tree, {**(extra_timings or {}), "report": token})
    page = page.replace(token, f"{time.perf_counter() - started:.3g}", 1)
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path
