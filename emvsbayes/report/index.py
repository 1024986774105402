"""``reports/index.html``: one page listing every run in a reports folder, read from their results files."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from emvsbayes.errors import UserError
from emvsbayes.outputs import is_our_page
from emvsbayes.report.markup import Raw, esc, table
from emvsbayes.report.render import CONTENT_SECURITY_POLICY
from emvsbayes.report.summary import build_summary, verdict_mark
from emvsbayes.results import atomic_write, read_results

HEADER = ["run", "title", "spec", "model", "created", "verdicts", "warnings"]


def _run_row(folder: Path) -> tuple[str, list]:
    """(sort key, table row) for one run folder; a row with a note when its results cannot be read."""
    link = Raw(f'<a href="{esc(quote(folder.name))}/index.html">{esc(folder.name)}</a>')
    try:
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


def _is_index_page(path: Path) -> bool:
    """An index page of ours (legacy pages had no generator tag, but the title of an index)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8192).decode("utf-8", errors="replace")
    except OSError:
        return False
    return "content='emvsbayes index'" in head or (is_our_page(path) and "<title>emvsbayes reports</title>" in head)


def _cls(ok) -> str:
    return {True: "good", False: "bad", None: "na"}[ok]


def render_index(reports_dir: Path) -> str:
    folders = sorted(p for p in Path(reports_dir).iterdir() if p.is_dir() and (p / "results.nc").is_file())
    rows = sorted((_run_row(folder) for folder in folders), key=lambda item: item[0], reverse=True)
    css = resources.files("emvsbayes.report").joinpath("style.css").read_text(encoding="utf-8")
    body = (table(HEADER, [row for _, row in rows]) if rows
            else "<p>No runs here yet: <code>emvsbayes run SPEC</code> writes one folder per run.</p>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='generator' content='emvsbayes index'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CONTENT_SECURITY_POLICY}\">"
            f"<title>emvsbayes reports</title><style>{css}</style></head><body>"
            f"<header><h1>emvsbayes reports</h1><p class='sub'>{esc(Path(reports_dir).resolve())} · "
            f"{len(rows)} run{'s' if len(rows) != 1 else ''}, newest first</p></header>"
            f"<main><section id='runs'>{body}</section></main></body></html>")


def refresh_index(reports_dir) -> Path | None:
    """Write ``reports_dir/index.html`` listing every run folder (one with a ``results.nc``) in it.

    Nothing is written (None is returned) over a file that is not an index page emvsbayes wrote: a
    run's own page (when the folder is itself an output folder) or anything of the user's.
    """
    reports_dir = Path(reports_dir)
    path = reports_dir / "index.html"
    if os.path.lexists(path) and (path.is_symlink() or not _is_index_page(path)):
        return None
    page = render_index(reports_dir)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path
