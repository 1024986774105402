"""The page around its parts: the head, the navigation and the sections in page order.

Drawing the parts needs matplotlib and arviz-plots (:mod:`emvsbayes.report.render`); putting them together
needs neither, so a run that hands the drawing to the page worker (:mod:`emvsbayes.report.workers`)
assembles its page without importing a plotting library.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources

import xarray as xr

from emvsbayes.report.markup import esc, section

#: No scripts, no fetches; inline style (ours and the SVGs') and data: images only.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

#: (anchor, title) of the page's sections in page order; each is drawn by the function of the same anchor
#: in :data:`emvsbayes.report.render.SECTION_FUNCTIONS`
SECTION_TITLES = (
    ("summary", "Summary"),
    ("data", "The data"),
    ("lesson", "EM step by step: the guess, hard EM, soft EM"),
    ("em", "EM: the iteration path"),
    ("bayes", "Bayes: the posterior"),
    ("comparison", "EM against the posterior"),
    ("label-switching", "Label switching"),
    ("ladder", "The uncertainty ladder: from EM's point to the posterior"),
    ("partition", "Clusters without labels"),
)

#: The parts of a page, each drawn by one call whatever process draws it: every section of
#: :data:`SECTION_TITLES`, the family's own sections, the spec's description and the reproducibility table.
PART_NAMES = (*(anchor for anchor, _ in SECTION_TITLES), "family", "description", "reproducibility")


def assemble_page(tree: xr.DataTree, parts: Mapping[str, object]) -> str:
    """The whole page from its drawn parts (``parts[name]`` for every name of :data:`PART_NAMES`: a section's
    HTML, the family's sections as (anchor, title, anchor it follows, HTML) records, the description's HTML,
    the reproducibility section's HTML)."""
    title = str(tree.attrs.get("title") or tree.attrs.get("spec_name") or "emvsbayes report")
    rendered = [(anchor, heading, parts[anchor]) for anchor, heading in SECTION_TITLES]
    # The family's own sections, each after the section it names (or before reproducibility if none has
    # that anchor); placed before empty sections are dropped, so "after the data" holds without a data table.
    for anchor, heading, after, html in parts["family"]:
        anchors = [a for a, _, _ in rendered]
        at = anchors.index(after) + 1 if after in anchors else len(rendered)
        rendered.insert(at, (anchor, heading, html))
    rendered.append(("reproducibility", "Reproducibility", parts["reproducibility"]))
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
            f"<nav>{nav}</nav></header><main>{parts['description']}{body}</main></body></html>")
