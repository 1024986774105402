"""``reports/index.html``: one page listing every run and every study in a reports folder, read from their
results files (``results.nc``, ``study.nc``)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np

from emvsbayes.errors import UserError
from emvsbayes.outputs import file_head, is_our_page
from emvsbayes.report.markup import Raw, esc, table
from emvsbayes.report.page import CONTENT_SECURITY_POLICY
from emvsbayes.report.summary import build_summary, verdict_mark
from emvsbayes.results import atomic_write, read_results

HEADER = ["run", "title", "spec", "model", "created", "verdicts", "warnings"]
STUDY_HEADER = ["study", "title", "kind", "replicates", "key verdicts"]
#: Pooled coverage further than this many Monte Carlo standard errors from nominal is marked.
COVERAGE_MCSE = 2.0


def _run_row(folder: Path, tree=None) -> tuple[str, list]:
    """(sort key, table row) for one run folder; a row with a note when its results cannot be read.
    ``tree``: the folder's results already in memory (the run that refreshes the index has them)."""
    link = Raw(f'<a href="{esc(quote(folder.name))}/index.html">{esc(folder.name)}</a>')
    try:
        if tree is None:
            tree = read_results(folder / "results.nc")
        summary = build_summary(tree)
    except UserError as error:
        return "", [esc(folder.name), Raw(f'<span class="bad">skipped: {esc(error)}</span>'), "", "", "", "", ""]
    except Exception as error:  # a results file of a newer layout must not stop the whole index
        return "", [esc(folder.name), Raw(f'<span class="bad">skipped: cannot summarise ({esc(type(error).__name__)})</span>'),
                    "", "", "", "", ""]
    facts = dict(summary.facts)
    verdicts = Raw("<br>".join(f'<span class="mark {_cls(v.ok)}">{esc(verdict_mark(v))}</span> {esc(v.topic)}: {esc(v.text)}'
                               for v in summary.verdicts))
    if not (folder / "index.html").is_file():
        link = Raw(f"{esc(folder.name)} (no report yet: emvsbayes report {esc(folder.name)}/results.nc)")
    created = str(tree.attrs.get("created", ""))
    return created, [link, summary.title, tree.attrs.get("spec_name", ""), facts.get("model", ""), created, verdicts,
                     str(len(summary.warnings))]


def _coverage_verdicts(ds) -> list[tuple[bool, str]]:
    """Per interval kind: coverage pooled over every cell, replicate and parameter, against nominal."""
    nominal = float(ds.attrs.get("nominal", np.nan))
    verdicts = []
    for kind in ("wald", "bootstrap", "posterior"):
        if f"{kind}_covered" not in ds:
            continue
        covered = np.asarray(ds[f"{kind}_covered"].values, dtype=float)
        covered = covered[np.isfinite(covered)]
        if not covered.size:
            continue
        share = float(covered.mean())
        # The binomial standard error at nominal: how far pooled coverage strays by chance alone
        # (intervals of one replicate are not independent, so this is a lower bound on the spread).
        mcse = float(np.sqrt(nominal * (1 - nominal) / covered.size))
        ok = abs(share - nominal) <= COVERAGE_MCSE * mcse
        verdicts.append((ok, f"{kind} intervals cover {share:.3f} (nominal {nominal:g}, ± {COVERAGE_MCSE:g} MCSE "
                             f"= {COVERAGE_MCSE * mcse:.3f}; {covered.size} intervals)"))
    return verdicts


def _sbc_verdicts(ds) -> list[tuple[bool, str]]:
    if "sbc_pass" not in ds:
        return []
    passes = np.asarray(ds["sbc_pass"].values).ravel()
    return [(bool(passes.all()), f"{int(passes.sum())} of {passes.size} cells pass the rank uniformity test "
                                 f"(alpha {ds.attrs.get('alpha')})")]


def _study_row(folder: Path) -> list:
    """One study folder as a row of the studies table; a row with a note when its file cannot be read."""
    from emvsbayes.results import read_study  # only when there is a study to list

    link = Raw(f'<a href="{esc(quote(folder.name))}/index.html">{esc(folder.name)}</a>')
    if not (folder / "index.html").is_file():
        link = Raw(f"{esc(folder.name)} (no report page)")
    try:
        ds = read_study(folder / "study.nc")
    except UserError as error:
        return [link, Raw(f'<span class="bad">skipped: {esc(error)}</span>'), "", "", ""]
    except Exception as error:  # a study file of a newer layout must not stop the whole index
        return [link, Raw(f'<span class="bad">skipped: cannot summarise ({esc(type(error).__name__)})</span>'),
                "", "", ""]
    status = np.asarray(ds["status"].values) if "status" in ds else np.array([])
    n_cells = int(status.size // max(ds.sizes.get("replicate", 1), 1)) if status.size else 0
    replicates = (f"{ds.sizes.get('replicate', 0)} per cell x {n_cells} cell{'s' if n_cells != 1 else ''}; "
                  f"{int((status == 1).sum())} ok, {int((status == 0).sum())} failed")
    kind = ds.attrs.get("kind", "")
    verdicts = _coverage_verdicts(ds) if kind == "coverage" else _sbc_verdicts(ds)
    shown = Raw("<br>".join(f'<span class="mark {_cls(ok)}">{"ok" if ok else "check"}</span> {esc(text)}'
                            for ok, text in verdicts)) if verdicts else "none recorded"
    return [link, str(ds.attrs.get("title", "")), f"{kind} ({ds.attrs.get('family', '')} mixture)", replicates, shown]


def _is_index_page(path: Path) -> bool:
    """An index page of ours (legacy pages had no generator tag, but the title of an index)."""
    head = file_head(path, 8192)
    if head is None:
        return False
    return "content='emvsbayes index'" in head or (is_our_page(path) and "<title>emvsbayes reports</title>" in head)


def _cls(ok) -> str:
    return {True: "good", False: "bad", None: "na"}[ok]


def render_index(reports_dir: Path, known: dict | None = None) -> str:
    """The index page; ``known`` maps folder names to their results trees already read (not read again)."""
    known = known or {}
    folders = sorted(p for p in Path(reports_dir).iterdir() if p.is_dir() and (p / "results.nc").is_file())
    rows = sorted((_run_row(folder, known.get(folder.name)) for folder in folders), key=lambda item: item[0],
                  reverse=True)
    studies = [_study_row(p) for p in sorted(Path(reports_dir).iterdir()) if p.is_dir() and (p / "study.nc").is_file()]
    css = resources.files("emvsbayes.report").joinpath("style.css").read_text(encoding="utf-8")
    body = (table(HEADER, [row for _, row in rows]) if rows
            else "<p>No runs here yet: <code>emvsbayes run SPEC</code> writes one folder per run.</p>")
    if studies:
        body += ("</section><section id='studies'><h2>Simulation studies</h2>"
                 "<p>Studies made with <code>emvsbayes study</code>: coverage pooled over every cell, replicate and "
                 "parameter, or how many cells pass simulation-based calibration; each study's page has the "
                 "details per cell.</p>" + table(STUDY_HEADER, studies))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='generator' content='emvsbayes index'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CONTENT_SECURITY_POLICY}\">"
            f"<title>emvsbayes reports</title><style>{css}</style></head><body>"
            f"<header><h1>emvsbayes reports</h1><p class='sub'>{esc(Path(reports_dir).resolve())} · "
            f"{len(rows)} run{'s' if len(rows) != 1 else ''}, newest first"
            f"{f', and {len(studies)} simulation stud' + ('ies' if len(studies) != 1 else 'y') if studies else ''}"
            "</p></header>"
            f"<main><section id='runs'>{body}</section></main></body></html>")


def refresh_index(reports_dir, known: dict | None = None) -> Path | None:
    """Write ``reports_dir/index.html`` listing every run folder (one with a ``results.nc``) in it.

    Nothing is written (None is returned) over a file that is not an index page emvsbayes wrote: a
    run's own page (when the folder is itself an output folder) or anything of the user's. ``known``:
    folder name -> that folder's results tree, already in memory (a run passes its own, so the file it
    has just written and read back is not opened and hashed once more: ~0.7 s of a warm run into reports/).
    """
    reports_dir = Path(reports_dir)
    path = reports_dir / "index.html"
    if os.path.lexists(path) and (path.is_symlink() or not _is_index_page(path)):
        return None
    page = render_index(reports_dir, known)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path
