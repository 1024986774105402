"""The comparison report: one self-contained HTML file rendered from ``results.nc`` alone."""

from emvsbayes.report.index import refresh_index
from emvsbayes.report.render import render_report, render_report_file
from emvsbayes.report.summary import build_summary, summary_card_text

__all__ = ["build_summary", "refresh_index", "render_report", "render_report_file", "summary_card_text"]
