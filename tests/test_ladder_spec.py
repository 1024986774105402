"""The spec's [ladder] table: defaults, and one line naming the key for each bad value."""

import pytest

from emvsbayes.errors import UserError
from emvsbayes.spec import validate

BASE = {"model": {"family": "coins"}, "data": {"dataset": "coins_lecture"}}


def test_ladder_is_off_by_default_with_every_rung_listed():
    ladder = validate(dict(BASE))["ladder"]
    assert ladder["enabled"] is False
    assert ladder["rungs"] == ["map_em", "advi_meanfield", "advi_fullrank", "bootstrap_bayesian"]
    assert ladder["engine"] == "programs"


@pytest.mark.parametrize(("table", "words"), [
    ({"rungs": ["laplace"]}, ("[ladder] rungs", "'laplace'")),
    ({"vi_iter": 5}, ("[ladder] vi_iter", "at least 8")),
    ({"enabled": "yes"}, ("[ladder] enabled", "true or false")),
    ({"draw": 10}, ("[ladder]", "draws")),
    ({"engine": "stan"}, ("[ladder] engine", "'stan'")),
])
def test_bad_ladder_values_name_the_key(table, words):
    with pytest.raises(UserError) as error:
        validate({**BASE, "ladder": table})
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["programs", "pymc"])
def test_the_engine_key_picks_the_route(engine, tmp_path, monkeypatch):
    """[ladder] engine reaches the ladder: "programs" stores the model's Laplace/ADVI programs in the program
    cache (a ladder-*.npz file), "pymc" compiles PyMC's own functions and stores none; both give every rung."""
    from pathlib import Path

    from emvsbayes import api
    from emvsbayes.spec import load_spec

    cache = tmp_path / "programs"
    monkeypatch.setenv("EMVSBAYES_PROGRAM_CACHE_DIR", str(cache))
    spec = load_spec(Path(__file__).parent.parent / "models" / "lecture_coins.toml")
    spec["bayes"].update(draws=50, tune=50, chains=2)
    spec["em"]["bootstrap"] = 4
    spec["model_choice"]["components"] = []  # the ladder's route is the point: no posterior per K
    spec["ladder"].update(engine=engine, vi_iter=100, draws=50, bootstrap=4)
    result = api.run(spec, out=tmp_path / "out")
    rungs = list(result.results["uncertainty_ladder"]["rung"].values)
    assert {"laplace", "advi_fullrank", "bootstrap_bayesian", "bootstrap_parametric"} <= set(rungs)
    stored = sorted(p.name for p in cache.glob("ladder-*.npz"))
    assert (len(stored) == 1) if engine == "programs" else (stored == [])
