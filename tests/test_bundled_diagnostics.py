"""The bundled comparison specs pass the diagnostics their report shows, on more than one sampler seed.

Each run goes through the runner's own posterior path (EM answers as starts, the spec's [bayes]
settings, relabelling, the summary's diagnostics verdict), with fixed seeds: deterministic on one
machine, but not across machines: a machine's floating point (its BLAS kernels, its vector units) sends a
chain down another path. So a spec that passes at its own seed on one machine is not enough, and a test
that names the seeds that must pass fails on another machine by luck. The test counts the failures over
several seeds (the spec's own among them) and bounds them, with the bound set from the failure rate
measured over 40 seeds, so that on a machine where the spec fails as often as measured the test fails
with a probability said below.

Measured: acidity's largest R-hat 1.0006-1.0031 over 12 seeds against the 1.01 limit (4 x 1000 draws,
its former setting, failed at seeds 1001 and 1007); galaxies K = 3 (a component on about three galaxies
makes a funnel, and chains started at different EM optima can cross between modes) failed at 4 of 40
seeds (2000-2039) on an AMD EPYC machine on 2026-12-04 (divergences, or R-hat / ESS within modes),
among them the spec's own seed, where the seeds 1003-1006 this test used to require had passed on the
machines before; 2000 tuning steps instead of 1000 failed at 8 of the 40.
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
        seed = seeds["sampler"] if seed == SPEC_SEED else seed
        groups = runner.bayes_groups(family, spec, model_def, data, restarts, coords, {"sampler": seed}, {}, None)
        verdict = {v.topic: v for v in build_summary(build_tree(groups, {"spec": spec})).verdicts}["diagnostics"]
        out.append((seed, verdict.text, verdict.ok))
    return out


#: The sampler seed a run of the spec itself uses (its master seed's child): what a user sees first.
SPEC_SEED = "spec"


# (spec, sampler seeds, the most of them that may fail). acidity passed at all 40 seeds (2000-2039, the same
# machine): at a failure rate of 0.02, 2 or more failures in 9 seeds have probability 0.013. galaxies, failing at a rate of
# 0.1 (4 of 40): 5 or more failures in 12 seeds have probability 0.004; at the rate's upper 95 % bound, 0.24,
# about 0.13; a spec failing half its seeds still passes with probability 0.19 (binomial tails).
@pytest.mark.parametrize("name, sampler_seeds, most_failed", [
    ("acidity", [SPEC_SEED, *range(1000, 1008)], 1),
    ("galaxies", [SPEC_SEED, *range(1000, 1011)], 4),
])
def test_bundled_spec_passes_its_diagnostics_on_most_seeds(name, sampler_seeds, most_failed):
    failed = [(seed, text) for seed, text, ok in _verdicts(name, sampler_seeds) if not ok]
    assert len(failed) <= most_failed, failed
