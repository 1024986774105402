"""Work a study does once that it used to do twice (issue 21 item 7: what follows the last replicate is time
no second worker divides)."""

from __future__ import annotations

from pathlib import Path

from emvsbayes.study import read_study
from emvsbayes.study import report

ROOT = Path(__file__).resolve().parents[1]


def test_the_page_and_coverage_svg_share_one_drawing_of_the_rung_figure(tmp_path, monkeypatch):
    # The page inlined the figure of every interval against N and coverage.svg drew it again (a second of
    # matplotlib after the last replicate); now it is drawn once and the same SVG goes to both.
    calls = []
    draw = report.rung_figure

    def counted(ds, axes):
        calls.append(1)
        return draw(ds, axes)

    monkeypatch.setattr(report, "rung_figure", counted)
    page = report.render_study_report(read_study(ROOT / "studies" / "coverage_ladder" / "study.nc"), tmp_path / "index.html")
    assert len(calls) == 1
    svg = (tmp_path / "coverage.svg").read_text(encoding="utf-8")
    assert "<svg" in svg
    assert svg in page.read_text(encoding="utf-8")


def test_write_study_returns_the_file_as_read_back_for_the_page(tmp_path):
    # The page is rendered from what write_study read back and hashed, not from a second read of study.nc.
    import numpy as np
    import xarray as xr

    from emvsbayes.study.run import STUDY_FORMAT, write_study

    ds = xr.Dataset({"coverage": ("cell", np.linspace(0.1, 0.9, 4))}, attrs={"format": STUDY_FORMAT, "kind": "coverage"})
    written = write_study(ds, tmp_path / "study.nc")
    again = read_study(tmp_path / "study.nc")
    assert written is not None and written.attrs["checksum"] == again.attrs["checksum"]
    xr.testing.assert_identical(written, again)
