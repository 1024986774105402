"""The comparison report: one self-contained HTML file rendered from ``results.nc`` alone."""

from emvsbayes.report.render import render_report, render_report_file

__all__ = ["render_report", "render_report_file"]
