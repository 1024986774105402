"""The bundled comparison specs pass the diagnostics their report shows, on more than one sampler seed.

Each run goes through the runner's own posterior path (EM answers as starts, the spec's [bayes]
settings, relabelling, the summary's diagnostics verdict), with fixed seeds: deterministic on one
machine. A machine's floating point can change a chain's path, so a spec that passes only at its
own seed is not enough; these seeds are the spec's settings seen on several paths. Measured margins
(the specs' comments): acidity's largest R-hat 1.0006-1.0031 and galaxies' 1.0007-1.0014 over these
seeds, against the 1.01 limit. With the specs' former settings (4 x 1000 draws) acidity failed at
seeds 1001 and 1007 (R-hat 1.010, 1.013) and galaxies at 1004 (R-hat); with 4 x 4000 draws but
target_accept 0.95, galaxies still failed at 1004 (divergences) and 1006 (a chain crossing modes).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from emvsbayes import runner
from emvsbayes.family import get_family
from emvsbayes.pipeline import child_seeds, load_data
from emvsbayes.report.summary import build_summary
from emvsbayes.results import build_tree
from emvsbayes.spec import validate

pytestmark = pytest.mark.slow

MODELS = Path(__file__).resolve().parents[1] / "models"


def _verdicts(name: str, sampler_seeds) -> list[tuple[int, str, bool]]:
    with open(MODELS / f"{name}.toml", "rb") as handle:
        spec = validate(tomllib.load(handle))
    data = load_data(spec)
    family = get_family("gaussian")
    seeds = child_seeds(spec["seed"])
    model_def = family.model_from_spec(spec, data)
    next_init, policy = family.starts(model_def, data, spec["em"], np.random.default_rng(seeds["em"]))
    restarts = runner.fit_until(family, model_def, data, next_init, policy, spec["em"]).restarts
    coords = family.coords(spec, model_def, data)
    out = []
    for seed in sampler_seeds:
        groups = runner.bayes_groups(family, spec, model_def, data, restarts, coords, {"sampler": seed}, {}, None)
        verdict = {v.topic: v for v in build_summary(build_tree(groups, {"spec": spec})).verdicts}["diagnostics"]
        out.append((seed, verdict.text, verdict.ok))
    return out


@pytest.mark.parametrize("name, sampler_seeds", [("acidity", range(1000, 1008)), ("galaxies", range(1003, 1007))])
def test_bundled_spec_passes_its_diagnostics_on_several_seeds(name, sampler_seeds):
    failed = [(seed, text) for seed, text, ok in _verdicts(name, sampler_seeds) if not ok]
    assert not failed, failed
