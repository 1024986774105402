"""How the report turns a figure into SVG (issue 21, item 2: rendering was a third of a warm lecture run):
each figure is drawn once, not twice, and each text is measured once per page; the SVG is the same as
matplotlib's own ``savefig(bbox_inches="tight")`` writes."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.textpath import TextToPath

from emvsbayes.report import figures


def _figure():
    # a title, a legend at "best" (placed at draw time), a colour bar, rotated tick labels and a long y label:
    # the parts whose places a layout pass could move
    rng = np.random.default_rng(2)
    fig, axes = plt.subplots(1, 2, figsize=(figures.PAGE_WIDTH, 3.2))
    axes[0].plot(rng.normal(size=50).cumsum(), label="chain 0")
    axes[0].plot(rng.normal(size=50).cumsum(), label="chain 1")
    axes[0].legend(loc="best", title="chains")
    axes[0].set_title("theta[0]")
    axes[0].set_ylabel("a long label of the parameter")
    image = axes[1].imshow(rng.random((6, 6)))
    fig.colorbar(image, ax=axes[1])
    axes[1].set_xticks(range(6), [f"set {i}" for i in range(6)], rotation=45)
    return fig


def _matplotlib_svg(fig, salt: str) -> str:
    buffer = io.StringIO()
    with plt.rc_context({"svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = figures._BIDI.sub("", buffer.getvalue())
    return figures.compact_svg(text[text.index("<svg"):])


def test_a_figure_is_drawn_once_and_comes_out_as_matplotlib_writes_it(monkeypatch):
    expected = _matplotlib_svg(_figure(), "fig0")  # matplotlib as released: a layout pass, then the drawing
    draws = []
    draw = Figure.draw

    def counted(self, renderer):
        draws.append(renderer)
        return draw(self, renderer)

    monkeypatch.setattr(Figure, "draw", counted)
    figures.new_page()
    ours = figures.to_svg(_figure())
    assert ours == expected
    assert len(draws) == 1  # was 2: savefig's layout-only pass before the drawing


def test_each_text_is_measured_once_per_page(monkeypatch):
    measured = []
    measure = TextToPath.get_text_width_height_descent

    def counted(self, s, prop, ismath):
        measured.append(s)
        return measure(self, s, prop, ismath)

    monkeypatch.setattr(TextToPath, "get_text_width_height_descent", counted)
    figures.new_page()
    first = figures.to_svg(_figure())
    n_first = len(measured)
    second = figures.to_svg(_figure())
    # the second figure's texts are the first's: measured again before (matplotlib caches per renderer only)
    assert n_first > 0 and len(measured) == n_first
    figures.new_page()  # a new page measures afresh, and the same figure comes out the same
    assert figures.to_svg(_figure()) == first != second  # (the second figure's ids are salted by its number)
    assert len(measured) == 2 * n_first
