"""Every bundled report as a reader sees it in a browser 1400 px wide: no plotting library's error text,
no raw variable name in a visible table header, every model-choice criterion under a readable header,
every R-hat marked red readable as above 1.01, figures at a readable width, and the heroes page under
15,000 px with its heroes named.

Each spec is run once per session with the same structure but fewer draws, tuning steps and bootstrap
replicates (the page's layout depends on which groups and parameters there are, not on how many draws):
a spec without [model_choice] is the session's shared quick run (conftest.quick_run, which
tests/test_repeatability.py runs a second time), a spec with one a reduced run that keeps its model choice
(the "Choosing K" table is checked here); the lesson spec reuses the session's full ``lecture_run``.
Slow: one reduced run per bundled spec.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from conftest import QUICK, QUICK_LADDER, quick_run_group
from emvsbayes import api
from emvsbayes.results import read_results
from emvsbayes.spec import load_spec, resolve_data_path
from test_browser import NAMES_PROBE, DevTools, assert_clean_page, load, overlapping
from test_outputs import without_checksum

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODELS = Path(__file__).resolve().parents[1] / "models"
#: the comparison specs (a study spec has a [grid] table and writes a study page, tested elsewhere)
BUNDLED = sorted(p.stem for p in MODELS.glob("*.toml") if "grid" not in tomllib.loads(p.read_text(encoding="utf-8")))

#: names from the results file that must never be a visible table header or a word of one
RAW_NAMES = ("mean_abs_diff", "entropy_em", "entropy_posterior", "abs_diff", "hard_label", "elpd_waic", "elpd_loo",
             "log_evidence", "n_params", "p_loo", "n_pareto_k_bad", "rhat_before", "rhat_after", "ess_before",
             "ess_after", "membership_relabelled", "min_expected_count", "n_reached_best", "loglik", "obs",
             "theta_sorted_mean", "modal_perm", "n_switches", "elpd_lfo", "lfo_refits", "lfo_n_bad_k", "lfo_first")
#: a model-choice variable and the words its column header must hold (an oracle written here, not the report's)
CRITERIA = {"bic": "BIC", "aic": "AIC", "icl": "ICL", "log_evidence": "log evidence", "elpd_loo": "PSIS-LOO",
            "elpd_waic": "WAIC", "p_loo": "effective parameters", "loglik": "log-likelihood",
            "n_params": "free parameters", "n_pareto_k_bad": "Pareto k", "elpd_lfo": "leave-future-out",
            "lfo_refits": "posterior fits", "lfo_n_bad_k": "Pareto k"}
#: what arviz, matplotlib or Python say when a figure fails; none of it may reach a page
ERROR_TEXT = ("could not be drawn", "could not draw", "subplots", "max_subplots", "Traceback", "Error:", "rcParams",
              "ValueError", "plot_rank", "plot_trace")

PAGE_PROBE = """JSON.stringify({
  headers: [...document.querySelectorAll('th')].filter(h => h.offsetParent !== null).map(h => h.innerText),
  choosingK: (() => {
    const h = [...document.querySelectorAll('h3')].find(h => h.innerText === 'Choosing K');
    let el = h && h.nextElementSibling;
    while (el && el.tagName !== 'TABLE') el = el.nextElementSibling;
    return el ? [...el.querySelectorAll('thead th')].map(th => th.innerText) : [];
  })(),
  rhatMarked: [...document.querySelectorAll('table')].flatMap(t => {
    const heads = [...t.querySelectorAll('thead th')].map(th => th.innerText);
    return [...t.querySelectorAll('tbody tr')].flatMap(tr => [...tr.children].map((td, i) =>
      [heads[i] || '', td.querySelector('span.bad') ? td.innerText : null])).filter(([h, v]) => v !== null && /R-hat/.test(h));
  }),
  essCells: [...document.querySelectorAll('table')].flatMap(t => {
    const heads = [...t.querySelectorAll('thead th')].map(th => th.innerText);
    const i = heads.indexOf('bulk ESS');
    if (i < 0 || heads.includes('bulk ESS relabelled') || heads[0] !== 'parameter') return [];
    return [...t.querySelectorAll('tbody tr')].map(tr => [tr.children[i].innerText, !!tr.children[i].querySelector('span.bad')]);
  }),
  figureWidths: [...document.querySelectorAll('figure.fig > svg')].map(s => [s.closest('figure').dataset.fig, s.getBoundingClientRect().width]),
  contentWidth: document.querySelector('section').clientWidth,
  height: document.documentElement.scrollHeight
})"""


@pytest.fixture(scope="module")
def devtools(tmp_path_factory):
    browser = DevTools(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


def reduced_run(name: str, out: Path) -> Path:
    """The bundled spec ``name`` run with the same structure and fewer draws, tuning steps and bootstrap
    replicates (and fewer K where its model choice samples more than three); its folder (results.nc and the page
    the run wrote)."""
    spec = load_spec(MODELS / f"{name}.toml")
    data_file = resolve_data_path(spec)
    if data_file is not None:
        spec["data"]["file"] = str(data_file)
    # The posterior and the model choice's posteriors with the same chains, draws and tuning steps (the quick runs'):
    # the spec's K then samples one program in both (its compile, 2-5 s cold, was a third of such a run); the table's
    # rows and columns and the figures do not depend on the draws.
    spec["bayes"].update(QUICK)
    spec["model_choice"].update(QUICK)
    # a list of more than two K (galaxies: 1-6, the Poisson mixture: 1-4) keeps the spec's K and the one below: the
    # table and figure are the same kind of rows; each K left out is a model shape fewer to compile and sample
    chosen = spec["model_choice"].get("components") or []
    if len(chosen) > 2 and spec["model_choice"]["bayes"]:
        k = spec["model"]["components"]
        spec["model_choice"]["components"] = [kc for kc in chosen if kc in (k - 1, k)] or chosen[:2]
    if spec["em"].get("bootstrap"):
        spec["em"]["bootstrap"] = 10
    if spec.get("ladder", {}).get("enabled"):
        spec["ladder"].update(QUICK_LADDER)
    api.run(spec, out=out)
    return out


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory, request):
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name == "lecture_coins":
            return request.getfixturevalue("lecture_run")
        if "model_choice" not in tomllib.loads((MODELS / f"{name}.toml").read_text(encoding="utf-8")):
            return request.getfixturevalue("quick_run")(name).report_path.parent
        if name not in made:
            made[name] = reduced_run(name, tmp_path_factory.mktemp(f"bundled-{name}"))
        return made[name]

    return get


def xdist_group(name: str) -> pytest.MarkDecorator:
    """The spec's pytest-xdist group: with the other readers of the shared run it reads, or its own (its
    reduced run is read by this test alone, so the specs' runs are spread over the workers)."""
    if name == "lecture_coins":
        return pytest.mark.xdist_group("lecture_run")
    if "model_choice" not in tomllib.loads((MODELS / f"{name}.toml").read_text(encoding="utf-8")):
        return quick_run_group(name)
    return pytest.mark.xdist_group(f"bundled-{name}")


def header_words(header: str) -> set[str]:
    return set(re.split(r"[\s,;:()\[\]|]+", header)) - {""}


@pytest.mark.parametrize("name", [pytest.param(name, marks=xdist_group(name)) for name in BUNDLED])
def test_bundled_report_reads_without_the_source(devtools, bundled_run, name, tmp_path):
    folder = bundled_run(name)
    tree = read_results(folder / "results.nc")
    # without its checksum (as files written before checksums are) it passes the checks such a file gets
    read_results(without_checksum(folder / "results.nc", tmp_path / "unchecked.nc"))
    result = load(devtools, folder / "index.html", PAGE_PROBE, width=1400)
    assert_clean_page(result, tree)
    page, text = result["extra"], result["probe"]["text"]
    for error in ERROR_TEXT:
        assert error not in text, (error, text[max(0, text.find(error) - 200):text.find(error) + 200])
    for header in page["headers"]:
        assert not header_words(header) & set(RAW_NAMES), header
        # a flattened array (four or more bare numbers separated by commas) is no header
        assert not re.search(r"-?\d+(\.\d+)?(, -?\d+(\.\d+)?){3,}", header), header
    if "model_choice" in tree.children:
        choice = tree["model_choice"]
        for var, words in CRITERIA.items():
            if var in choice and np.isfinite(np.asarray(choice[var].values, dtype=float)).any():
                assert any(words in h for h in page["choosingK"]), (var, page["choosingK"])
    # a red R-hat reads as above the 1.01 limit it broke (1.0103, never "1.01")
    for header, value in page["rhatMarked"]:
        assert float(value) > 1.01, (header, value)
    # where the raw bulk ESS is the one to read (no relabelled column beside it) it is held to 100 per chain
    if "posterior" in tree.children:
        limit = 100 * tree["posterior"].sizes["chain"]
        for value, marked in page["essCells"]:
            if value.isdigit():
                assert marked == (int(value) < limit), (value, marked, limit)
    # figures fill most of the page's width (not a third of it)
    wide = [(fig, width) for fig, width in page["figureWidths"] if fig not in ("joint", "data")]
    assert all(width >= 0.6 * page["contentWidth"] for _, width in wide), (page["contentWidth"], wide)
    # two measures of one disagreement are shown with how they relate (else they read as a contradiction)
    if "membership_agreement" in tree.children and "mean_abs_diff" in tree["membership_agreement"].attrs:
        assert "share of probability that moves times 2 / K" in text
    if "heads" in tree["data"]:  # a coin report: the lesson's side-by-side table and the surface
        assert "What each ends with, side by side" in text
        assert any(fig == "loglik-surface" for fig, _ in page["figureWidths"])


def test_heroes_page_argues_against_k30_and_names_the_heroes(devtools, bundled_run):
    folder = bundled_run("heroes")
    tree = read_results(folder / "results.nc")
    result = load(devtools, folder / "index.html", PAGE_PROBE, width=1400)
    page, text = result["extra"], result["probe"]["text"]
    assert page["height"] < 15000, page["height"]
    # the argument, in numbers read from the results: parameters against the data's numbers, the likelihood
    # going to +infinity, and the degenerate K = 30 row not bolded as AIC's best
    choice = tree["model_choice"]
    k30 = list(choice["K"].values).index(30)
    assert "Why K = 30 with full covariances is not an answer" in text
    assert f"{int(choice['n_params'].values[k30])} free parameters" in text
    assert "69 rows x 12 features = 828 numbers" in text
    assert "plus infinity" in text and "spherical" in text
    assert "30 (degenerate)" in text
    # which hero is in which cluster, by name, with EM's label and the posterior's probability
    names = [str(v) for v in tree["data"]["obs"].values]
    resp = tree["em"]["resp"].values
    for hero in (names[0], names[-1]):
        assert hero in text, hero
    component = int(resp[0].argmax())
    row = next(line for line in text.splitlines() if line.startswith(f"component {component}\t"))
    assert names[0] in row
    # constant rows dropped: no row of a spherical covariance's fixed zeros
    assert "cov[0, 最大生命, 初始生命]" not in text
    # every hero named on the principal-component scatter, no two names overlapping as the browser draws them
    shown = load(devtools, folder / "index.html", NAMES_PROBE, width=1400)["extra"]
    assert set(names) <= {name for name, *_ in shown["names"]}, set(names) - {name for name, *_ in shown["names"]}
    assert overlapping(shown["names"]) == []
    # label-switching tables name features as the rest of the page does, one row per spherical variance
    for flat in ("mu[0,0]", "cov[2,0,0]", "cov[1,0,0]"):
        assert flat not in text, flat
