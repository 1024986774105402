"""Fuzzing the input edges: the spec validator, the TOML reader and the CSV loaders.

Whatever they are given, the only error that may come out is a :class:`UserError` with a one-line
message (what the command line prints with exit status 2); any other exception is a bug.

The suite runs a brief pass (``EMVSBAYES_FUZZ_EXAMPLES``, default 200 examples per test); for a
longer search::

    EMVSBAYES_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emvsbayes.data import load_coins_csv, load_continuous_csv
from emvsbayes.errors import UserError
from emvsbayes.spec import SCHEMA, load_spec, validate

EXAMPLES = int(os.environ.get("EMVSBAYES_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 200,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_documented(call):
    """``call()`` returns, or raises a UserError whose message is one non-empty line."""
    try:
        call()
    except UserError as error:
        message = str(error)
        assert message and len(message.splitlines()) == 1 and not message.endswith("\n"), repr(message)
        return "error"
    return "ok"


# --- the spec validator on random nested data ----------------------------------------------------------

SECTIONS = [s for s in SCHEMA if s]
KEYS = sorted({key for keys in SCHEMA.values() for key in keys})
# Values that TOML can hold: strings, integers (of any size), floats (nan and inf too), booleans,
# dates, arrays and tables, nested.
scalars = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["coins", "gaussian", "random", "auto", "soft", "hard", "kmeans", "coins_lecture",
                     "acidity", "symmetric", "ordered", "nutpie", "full", "tied", "utf-8", ""]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, -1, 10**400, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12,
)
sections = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=5)
raw_specs = st.dictionaries(
    st.sampled_from([*SECTIONS, "title", "seed", "description"]) | st.text(max_size=8),
    sections | values,
    max_size=6,
)
# Mostly well-formed specs with one or two random values: these reach the deeper checks.
near_valid = st.fixed_dictionaries(
    {
        "data": st.fixed_dictionaries({"dataset": st.sampled_from(["coins_lecture", "acidity"])},
                                      optional={k: values for k in SCHEMA["data"] if k != "dataset"}),
        "model": st.fixed_dictionaries({"family": st.sampled_from(["coins", "gaussian"])},
                                       optional={k: values for k in SCHEMA["model"] if k != "family"}),
    },
    optional={section: st.dictionaries(st.sampled_from(sorted(SCHEMA[section])), values, max_size=3)
              for section in ("em", "bayes", "model_choice", "report")},
)


@FUZZ
@given(raw=raw_specs | values)
def test_validate_random_data(raw):
    assert_documented(lambda: validate(raw))


@FUZZ
@given(raw=near_valid)
def test_validate_near_valid_specs(raw):
    assert_documented(lambda: validate(raw))


@pytest.mark.parametrize("depth", [50, 400, 5000])
def test_validate_deep_nesting(depth):
    deep = "x"
    for _ in range(depth):
        deep = [deep]
    assert_documented(lambda: validate({"data": {"dataset": "coins_lecture"}, "model": {"family": "coins"},
                                        "em": {"init": deep}}))


# --- the TOML reader on random text ---------------------------------------------------------------------

toml_pieces = st.sampled_from([
    "[data]\n", "[model]\n", "[em]\n", "[bayes]\n", "[[x]]\n", "[", "]", "{", "}", "=", '"', "'", "'''", '"""',
    "\n", " ", "#", ",", ".", "family = \"coins\"\n", "dataset = \"coins_lecture\"\n", "components = ",
    "init = ", "nan", "inf", "-", "1e400", "9" * 30, "true", "1979-05-27T07:32:00Z", "\\", "\\u0000", "\x00",
    "é", "\u2028", "\r", "draws", "kinds = [\"soft\"]\n",
])
toml_texts = st.lists(toml_pieces, max_size=30).map("".join) | st.text(max_size=200)


@FUZZ
@given(text=toml_texts)
def test_load_spec_random_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("spec") / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    assert_documented(lambda: load_spec(path))


@FUZZ
@given(data=st.binary(max_size=200))
def test_load_spec_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("spec") / "fuzz.toml"
    path.write_bytes(data)
    assert_documented(lambda: load_spec(path))


# --- the CSV loaders on random bytes and CSV-ish text ---------------------------------------------------

cells = st.one_of(
    st.sampled_from(["", " ", "0", "1", "5", "10", "-1", "1.5", "10.0", "nan", "inf", "-inf", "1e30", "1e400",
                     "28%", "%", "1,000", "heads", "tosses", "x", "y", "远程", '"', '""', "\x00", "\r", "\u2028",
                     "9" * 40, "1_0", "0x10", "+3"]),
    st.text(alphabet=string.printable, max_size=6),
)
rows = st.lists(cells, min_size=1, max_size=4).map(",".join)
csv_texts = st.lists(st.sampled_from(["heads,tosses", "x,y", "x", "experiment,heads,tosses"]) | rows, max_size=8) \
    .map(lambda lines: "\n".join(lines))
encodings = st.sampled_from(["utf-8", "utf-8", "gb18030", "latin-1", "utf-16", "idna", "punycode", "utf-7", "rot13",
                             "unicode_escape", "nope"])


@FUZZ
@given(data=st.binary(max_size=300) | csv_texts.map(lambda t: t.encode("utf-8", "surrogatepass")), encoding=encodings)
def test_coins_csv_random(tmp_path_factory, data, encoding):
    path = tmp_path_factory.mktemp("csv") / "fuzz.csv"
    path.write_bytes(data)
    assert_documented(lambda: load_coins_csv(path, encoding=encoding))


@FUZZ
@given(
    data=st.binary(max_size=300) | csv_texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
    encoding=encodings,
    standardize=st.booleans(),
    percent=st.sampled_from([(), ("x",), ("y",)]),
    categories=st.sampled_from([None, {"y": {"远程": 1, "近战": 0}}, {"x": {"a": 1.0}}, {"x": {}}]),
    columns=st.sampled_from([None, ["x"], ["x", "y"], ["y", "y"], []]),
)
def test_continuous_csv_random(tmp_path_factory, data, encoding, standardize, percent, categories, columns):
    path = tmp_path_factory.mktemp("csv") / "fuzz.csv"
    path.write_bytes(data)
    assert_documented(lambda: load_continuous_csv(path, columns=columns, encoding=encoding, percent=percent,
                                                  categories=categories, standardize=standardize))
