"""The comparison report: one self-contained HTML file rendered from ``results.nc`` alone.

``render_report`` draws in this process and imports matplotlib and arviz-plots when first asked for;
``render_report_file`` (:mod:`emvsbayes.report.workers`) is imported when first asked for too, so that
``python -m emvsbayes.report.workers`` (the page worker) runs a module this package has not imported.
"""

from emvsbayes.report.index import refresh_index
from emvsbayes.report.summary import build_summary, summary_card_text

__all__ = ["build_summary", "refresh_index", "render_report", "render_report_file", "summary_card_text"]


def __getattr__(name: str):
    if name == "render_report":
        from emvsbayes.report.render import render_report

        return render_report
    if name == "render_report_file":
        from emvsbayes.report.workers import render_report_file

        return render_report_file
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
