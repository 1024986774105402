"""Every bundled comparison spec, run in a quick form (few draws, few bootstrap replicates), gives a
report that a real browser loads cleanly: no console errors, no network requests, every figure there."""

import json
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from emvsbayes.results import read_results
from test_browser import DevTools, assert_clean_page, load

BUNDLED = sorted(p.stem for p in (ROOT / "models").glob("*.toml")
                 if not p.stem.startswith(("study_", "sbc_")) and p.stem != "lecture_coins")  # lecture: test_browser


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def quick_spec(name: str, folder: Path) -> Path:
    """The bundled spec with small sampling, bootstrap and model-choice settings, same data and model."""
    spec = tomllib.loads((ROOT / "models" / f"{name}.toml").read_text(encoding="utf-8"))
    spec.setdefault("bayes", {}).update(chains=2, draws=150, tune=150)
    em = spec.setdefault("em", {})
    em["bootstrap"] = min(em.get("bootstrap", 0), 8)
    em["n_init"] = min(em.get("n_init", 1), 4)
    if "model_choice" in spec:
        spec["model_choice"].update(bayes=False)
    lines = [f"{k} = {_toml_value(v)}" for k, v in spec.items() if not isinstance(v, dict)]
    for section, table in spec.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def devtools(tmp_path_factory):
    browser = DevTools(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_spec_report_in_browser(name, devtools, tmp_path):
    out = tmp_path / name
    proc = run_cli("run", quick_spec(name, tmp_path), "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    tree = read_results(out / "results.nc")
    page = out / "index.html"
    assert page.stat().st_size < 5 * 2**20
    result = load(devtools, page)
    assert_clean_page(result, tree)
    assert tree.attrs["title"] in result["probe"]["text"]
