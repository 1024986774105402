"""The spec's [ladder] table: defaults, and one line naming the key for each bad value."""

import pytest

from emvsbayes.errors import UserError
from emvsbayes.spec import validate

BASE = {"model": {"family": "coins"}, "data": {"dataset": "coins_lecture"}}


def test_ladder_is_off_by_default_with_every_rung_listed():
    ladder = validate(dict(BASE))["ladder"]
    assert ladder["enabled"] is False
    assert ladder["rungs"] == ["map_em", "advi_meanfield", "advi_fullrank", "bootstrap_bayesian"]


@pytest.mark.parametrize(("table", "words"), [
    ({"rungs": ["laplace"]}, ("[ladder] rungs", "'laplace'")),
    ({"vi_iter": 5}, ("[ladder] vi_iter", "at least 8")),
    ({"enabled": "yes"}, ("[ladder] enabled", "true or false")),
    ({"draw": 10}, ("[ladder]", "draws")),
])
def test_bad_ladder_values_name_the_key(table, words):
    with pytest.raises(UserError) as error:
        validate({**BASE, "ladder": table})
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message
