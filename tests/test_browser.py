"""The report in a real browser: headless Chromium driven over the DevTools protocol (a small client on
``--remote-debugging-pipe``, standard library only). For each page: no console errors, no request but
the file itself, every figure the results imply is there as SVG, the screenshot is not blank, and
user strings that look like scripts are shown as text and never run."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from emvsbayes.report import render_report_file
from emvsbayes.results import read_results
from test_report import XSS, synthetic_tree

CHROMIUM = "/usr/bin/chromium"
# No skip when it is missing: bin/test installs Debian's chromium, and a missing browser is a failure.
pytestmark = [pytest.mark.browser]


class DevTools:
    """Chromium with the DevTools protocol on a pipe: fd 3 carries commands in, fd 4 replies and events
    out, each message JSON terminated by a NUL byte."""

    def __init__(self, user_data_dir: Path, timeout: float = 60.0):
        self.timeout = timeout
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # keep the browser's ends away from 3 and 4 before dup2 puts them there
        child_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)

        def wire_pipes():
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-extensions", "--hide-scrollbars",
             f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes, close_fds=False)
        os.close(child_in)
        os.close(child_out)
        self.out, self.inp = to_browser_w, from_browser_r
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.inp], [], [], remaining)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self.inp, 1 << 20)
            if not chunk:
                raise ConnectionError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            self.events.append(self._read_message(deadline))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (ConnectionError, TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.out)
        os.close(self.inp)


PAGE_PROBE = """JSON.stringify({
  svgs: document.querySelectorAll('svg').length,
  figures: [...document.querySelectorAll('figure.fig')].map(f => [f.dataset.fig, f.querySelectorAll(':scope > svg').length]),
  scripts: document.querySelectorAll('script').length,
  xss: typeof window.__xss,
  text: document.body.innerText,
  height: document.documentElement.scrollHeight
})"""


def load(devtools: DevTools, path: Path, extra_probe: str | None = None, width: int = 1200) -> dict:
    """Open ``path`` in a new tab ``width`` CSS pixels wide; what it showed, logged and requested, and a
    screenshot (and what ``extra_probe``, a JavaScript expression returning JSON text, found)."""
    target = devtools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = devtools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        devtools.call(f"{domain}.enable", session=session)
    devtools.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 1600, "deviceScaleFactor": 1, "mobile": False}, session)
    first_event = len(devtools.events)
    url = path.resolve().as_uri()
    devtools.call("Page.navigate", {"url": url}, session)
    devtools.wait_for("Page.loadEventFired", session)
    probe = json.loads(devtools.call("Runtime.evaluate", {"expression": PAGE_PROBE, "returnByValue": True},
                                     session)["result"]["value"])
    extra = (json.loads(devtools.call("Runtime.evaluate", {"expression": extra_probe, "returnByValue": True},
                                      session)["result"]["value"]) if extra_probe else None)
    png = base64.b64decode(devtools.call("Page.captureScreenshot", {"format": "png"}, session)["data"])
    events = [e for e in devtools.events[first_event:] if e.get("sessionId") == session]
    devtools.call("Target.closeTarget", {"targetId": target})
    errors = [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")]
    requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    return {"url": url, "probe": probe, "png": png, "errors": errors, "requests": requests, "extra": extra}


def expected_figures(tree) -> list[str]:
    """The figures a results tree implies, worked out here from its groups (not by the report's code)."""
    groups = set(tree.children)

    # the parameters the results declare (root attr "parameters"); a file without it: the mixtures' names
    declared = tuple(json.loads(tree.attrs["parameters"])) if "parameters" in tree.attrs else (
        "theta", "w", "mu", "sigma", "cov")

    def varying(group_name, names=declared):
        ds = tree[group_name]
        return [n for n in names if n in ds and np.ptp(ds[n].values) > 0]

    names = []
    if "data" in groups and "x" in tree["data"]:
        names.append("data")
    if "em_trace" in groups:
        # a run whose log-likelihood never changed (it started at its optimum) is said in words, not drawn
        if "em_restarts" in groups and any(v in tree["em_restarts"] for v in ("loglik_path", "loglik_trace")):
            var = "loglik_path" if "loglik_path" in tree["em_restarts"] else "loglik_trace"
            paths = list(tree["em_restarts"][var].values)
        else:
            paths = [tree["em_trace"]["loglik"].values]
            if "em_hard_trace" in groups:
                paths.append(tree["em_hard_trace"]["loglik"].values)
        finite = [np.asarray(p, dtype=float)[np.isfinite(np.asarray(p, dtype=float))] for p in paths]
        if any(len(p) > 1 and np.ptp(p) > 1e-9 * max(1.0, np.abs(p).max()) for p in finite):
            names.append("em-loglik")
        if varying("em_trace"):
            names.append("em-parameters")
    if "em_restarts" in groups:
        names.append("em-restarts")
    if "posterior" in groups:
        if varying("posterior", ("theta", "mu")) and tree["posterior"].sizes.get("component", 0) >= 2:
            names.append("joint")
        names += ["trace-before", "rank-before"]
        if "posterior_relabelled" in groups:
            names += ["trace-after", "rank-after"]
    if ("data" in groups and "heads" in tree["data"] and "em" in groups and "theta" in tree["em"]
            and tree["em"].sizes.get("component") == 2):
        names.append("loglik-surface")
    if "em" in groups and varying("posterior" if "posterior" in groups else "em"):
        names.append("forest")
    if "exact" in groups and "theta_sorted_mean" in tree["exact"] and "posterior" in groups:
        names.append("theta-sorted")
    if "model_choice" in groups:
        names.append("model-choice")
    if "sparse_mixture" in groups and "prob" in tree["sparse_mixture"]:
        names.append("sparse-mixture")
    if "label_switching" in groups and "posterior_relabelled" in groups:
        names.append("permutations")
    if "uncertainty_ladder" in groups:
        names += [f"ladder-{name}" for name in json.loads(tree["uncertainty_ladder"].attrs["parameters"])]
    if "coclustering" in groups:
        names.append("coclustering")
    # a hidden Markov model's own sections (its family's report_sections): the series by decoded state, the
    # transition matrix, and the Viterbi path against posterior decoding, whenever the run decoded the series
    if ("data" in groups and "y" in tree["data"] and "em" in groups and "transition" in tree["em"]
            and "decoding" in groups and {"viterbi", "smoothed"} <= set(tree["decoding"].data_vars)):
        names += ["hmm-series", "hmm-transition", "hmm-decoding"]
    return names


def distinct_colours(png: bytes) -> int:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 20) or [])


def assert_clean_page(result: dict, tree) -> None:
    probe = result["probe"]
    assert result["errors"] == [], result["errors"]
    assert set(result["requests"]) <= {result["url"]}, result["requests"]
    assert probe["scripts"] == 0
    expected = expected_figures(tree)
    assert sorted(name for name, _ in probe["figures"]) == sorted(expected)
    assert all(count == 1 for _, count in probe["figures"]), probe["figures"]
    assert probe["svgs"] == len(expected)
    assert distinct_colours(result["png"]) > 50, "the screenshot looks blank"
    assert probe["height"] > 2000


@pytest.fixture(scope="module")
def devtools(tmp_path_factory):
    browser = DevTools(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


def write_report(tree, folder: Path) -> Path:
    return render_report_file(tree, folder / "index.html")


@pytest.mark.slow
def test_lecture_report_in_browser(devtools, lecture_run, tmp_path):
    tree = read_results(lecture_run / "results.nc")
    page = write_report(tree, tmp_path)  # the current renderer, from the run's results alone
    result = load(devtools, page)
    assert_clean_page(result, tree)
    for text in ("Two coins (the EM lesson)", "Soft EM, step by step", "Label switching", "Reproducibility"):
        assert text in result["probe"]["text"]
    # The screenshot is kept beside the rendered page in this test's own folder: the run's folder is shared
    # by other tests, which check it holds nothing but the run's own outputs.
    (tmp_path / "screenshot.png").write_bytes(result["png"])


LESSON_PROBE = """JSON.stringify({
  description: (document.querySelector('p.description') || {}).innerText || '',
  differs: [...document.querySelectorAll('table.side-by-side tr.differs')].map(r => r.innerText),
  sideBySide: [...document.querySelectorAll('table.side-by-side th')].map(h => h.innerText),
  surface: [...document.querySelectorAll('figure[data-fig="loglik-surface"] svg')].map(s => s.getBoundingClientRect().width),
  headers: [...document.querySelectorAll('th')].map(h => h.innerText),
  cells: [...document.querySelectorAll('td')].map(c => c.innerText),
  choosingK: (() => {
    const h = [...document.querySelectorAll('h3')].find(h => h.innerText === 'Choosing K');
    let el = h && h.nextElementSibling;
    while (el && el.tagName !== 'TABLE') el = el.nextElementSibling;
    return el ? [...el.querySelectorAll('thead th')].map(th => th.innerText) : [];
  })(),
  order: ['The first guess', 'Hard EM, step by step', 'Soft EM, step by step', 'What each ends with, side by side']
    .map(t => [...document.querySelectorAll('h3')].findIndex(h => h.innerText === t))
})"""


@pytest.mark.slow
def test_lesson_page_reads_as_the_lesson(devtools, lecture_run, tmp_path):
    """The lesson's names, order, hard-vs-soft table, surface figure, description and every model-choice
    criterion, as a reader of the page sees them (text rendered by the browser, not the HTML source)."""
    tree = read_results(lecture_run / "results.nc")
    result = load(devtools, write_report(tree, tmp_path), LESSON_PROBE)
    page, text = result["extra"], result["probe"]["text"]
    assert "Which coin made each experiment" in page["description"]
    assert page["description"] == str(json.loads(tree.attrs["spec"])["description"])
    # the coins are A and B everywhere; no numbered coins or thetas
    for name in ("coin A", "coin B", "theta[A]", "theta_B", "P(coin A)"):
        assert name in text, name
    for numbered in ("coin 0", "coin 1", "theta[0]", "theta[1]", "P(0)", "P(1)"):
        assert numbered not in text, numbered
    # the lesson's order: the guess A, A, B, B, A, hard EM, soft EM, then what each ends with
    assert "A, A, B, B, A" in text
    assert page["order"] == sorted(page["order"]) and min(page["order"]) >= 0, page["order"]
    # the one experiment the two EMs put with different coins is highlighted: experiment 2, 7 heads of 10
    assert len(page["differs"]) == 1 and "experiment 2" in page["differs"][0], page["differs"]
    assert "coin A" in page["differs"][0] and "closer to coin B" in page["differs"][0]
    assert {"hard EM", "soft EM"} <= set(page["sideBySide"])
    assert any("log-likelihood" in h for h in page["sideBySide"])
    assert page["surface"] and page["surface"][0] > 700, page["surface"]  # drawn at a readable width
    # every criterion the model_choice group holds is a column, under a readable header
    headers = {"bic": "BIC", "aic": "AIC", "icl": "ICL", "log_evidence": "log evidence", "elpd_loo": "PSIS-LOO",
               "elpd_waic": "WAIC", "p_loo": "effective parameters", "loglik": "log-likelihood"}
    choice = tree["model_choice"]
    for var, header in headers.items():
        assert var in choice, var
        assert any(header in h for h in page["choosingK"]), (header, page["choosingK"])
    assert "not nested" in text
    # no raw variable names or flattened arrays in any visible table header or cell
    for raw in ("mean_abs_diff", "entropy_em", "elpd_waic", "log_evidence", "rhat_before", "ari"):
        assert not any(raw in cell.split() or raw in cell.replace(" ", "").split(",") for cell in page["headers"] + page["cells"]), raw
    assert not any(cell.count(",") >= 3 and all(part.strip().replace(".", "").isdigit() for part in cell.split(","))
                   for cell in page["cells"])


@pytest.mark.parametrize("features", [("eruptions", "waiting"), ("velocity",), ("a", "b", "c", "d", "e")])
def test_synthetic_gaussian_report_in_browser(devtools, tmp_path, features):
    tree = synthetic_tree(features=features, n_obs=300)
    result = load(devtools, write_report(tree, tmp_path))
    assert_clean_page(result, tree)


def test_minimal_report_in_browser(devtools, tmp_path):
    tree = synthetic_tree(label_switching=False, extras=False)
    for name in ("posterior", "sample_stats", "posterior_membership", "em_restarts", "em_optima"):
        del tree[name]
    result = load(devtools, write_report(tree, tmp_path))
    assert result["errors"] == [] and set(result["requests"]) <= {result["url"]}
    assert sorted(name for name, _ in result["probe"]["figures"]) == sorted(expected_figures(tree))


def test_script_in_user_strings_shows_as_text_and_never_runs(devtools, tmp_path):
    tree = synthetic_tree(title=XSS, features=(XSS, "b"), obs_label=XSS, n_obs=12)
    result = load(devtools, write_report(tree, tmp_path))
    probe = result["probe"]
    assert probe["xss"] == "undefined" and probe["scripts"] == 0
    assert XSS in probe["text"]  # shown as text: title, column names, spec
    assert_clean_page(result, tree)


def test_the_harness_sees_what_it_checks_for(devtools, tmp_path):
    """A bad page (no CSP, an inline script, a script error, a remote image) must trip every check."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>bad</p><script>window.__xss = 1; console.error('boom');</script>"
                   "<img src='http://127.0.0.1:9/x.png'></body></html>", encoding="utf-8")
    result = load(devtools, bad)
    assert result["probe"]["xss"] == "number"
    assert result["errors"]
    assert any(url.startswith("http://127.0.0.1:9/") for url in result["requests"])
    # the report's Content-Security-Policy blocks the same script, and the block is reported as an error
    page = (tmp_path / "csp.html")
    from emvsbayes.report.render import CONTENT_SECURITY_POLICY

    page.write_text(f"<!DOCTYPE html><html><head><meta http-equiv='Content-Security-Policy' content=\"{CONTENT_SECURITY_POLICY}\">"
                    "</head><body><script>window.__xss = 1</script></body></html>", encoding="utf-8")
    result = load(devtools, page)
    assert result["probe"]["xss"] == "undefined" and result["errors"]


#: every text of the data figure with its box on the page, and every rank panel's test result with the boxes
#: of the panel's clip rectangles (the area its curves are drawn in)
NAMES_PROBE = """JSON.stringify({
  names: [...document.querySelectorAll('figure[data-fig="data"] svg text')].map(t => {
    const r = t.getBoundingClientRect(); return [t.textContent, r.left, r.top, r.right, r.bottom]; }),
  pValues: [...document.querySelectorAll('figure[data-fig^="rank"] svg text')].filter(t => /^p [<=≈]/.test(t.textContent))
    .map(t => { const r = t.getBoundingClientRect(); return [t.textContent, r.left, r.top, r.right, r.bottom]; }),
  panels: [...document.querySelectorAll('figure[data-fig^="rank"] svg [clip-path]')].map(e => {
    const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }),
  rawP: [...document.querySelectorAll('svg text')].filter(t => /^p=/.test(t.textContent.trim())).length
})"""


def overlapping(boxes: list[list]) -> list[tuple[str, str]]:
    """Pairs of (text, left, top, right, bottom) boxes that share more than a pixel each way."""
    return [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if min(a[3], b[3]) - max(a[1], b[1]) > 1 and min(a[4], b[4]) - max(a[2], b[2]) > 1]


def test_named_rows_are_named_on_the_projection_and_rank_p_values_sit_clear(devtools, tmp_path):
    """69 named rows of 5 features (the heroes' shape): each point's name is on the principal-component
    scatter, as the browser draws it, without two names (or a name and an axis label) overlapping; each rank
    panel's uniformity-test result is outside every panel's drawing area (arviz-plots writes it inside,
    over the curves)."""
    tree = synthetic_tree(features=("a", "b", "c", "d", "e"), n_obs=69, obs_label="hero")
    result = load(devtools, write_report(tree, tmp_path), NAMES_PROBE, width=1400)
    assert_clean_page(result, tree)
    page = result["extra"]
    drawn = {name for name, *_ in page["names"]}
    assert {f"hero{i}" for i in range(69)} <= drawn, sorted({f"hero{i}" for i in range(69)} - drawn)
    assert overlapping(page["names"]) == []
    assert page["pValues"] and page["rawP"] == 0
    for text, left, top, right, bottom in page["pValues"]:
        # a failed test reads as below its 0.01 level and a passed one as not; arviz's two decimals cannot
        # place "0.01" on either side, so it is said to be at the level (never "p = 0.01: chains differ")
        value = float(re.search(r"[<=≈] ([0-9.]+)", text).group(1))
        assert ("chains differ" in text) == (value < 0.01), text
        assert ("at the test's level" in text) == (value == 0.01), text
        inside = [p for p in page["panels"] if min(right, p[2]) - max(left, p[0]) > 1 and min(bottom, p[3]) - max(top, p[1]) > 1]
        assert inside == [], (text, inside)
