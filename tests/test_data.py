"""Tests of emvsbayes.data: bundled data sets, CSV loading (including users' mistakes) and simulation."""

from __future__ import annotations

import hashlib
import importlib.resources
import re

import numpy as np
import pytest

from emvsbayes.data import (
    CoinData,
    ContinuousData,
    CountData,
    coin_sequences,
    dataset_info,
    list_datasets,
    load_coins_csv,
    load_continuous_csv,
    load_dataset,
    separated_gaussian_mixture,
    simulate_coins,
    simulate_gaussian_mixture,
)
from emvsbayes.errors import UserError

HEROES_COLUMNS = (
    "最大生命", "初始生命", "最大法力", "最高物攻", "初始物攻", "最大物防", "初始物防",
    "最大每5秒回血", "最大每5秒回蓝", "初始每5秒回蓝", "最大攻速", "攻击范围",
)


def raises_exactly(message: str):
    """pytest.raises for a UserError whose whole message is `message`."""
    return pytest.raises(UserError, match=f"^{re.escape(message)}$")


def write(tmp_path, name: str, text: str, encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def assert_one_line(excinfo) -> None:
    assert "\n" not in str(excinfo.value)


# --- bundled data sets -------------------------------------------------------------------------

EXPECTED_SHAPES = {
    "coins_do_batzoglou": (5,),
    "coins_lecture": (5,),
    "old_faithful": (272, 2),
    "galaxies": (82, 1),
    "acidity": (155, 1),
    "enzyme": (245, 1),
    "heroes": (69, 12),
    "earthquakes": (107,),
}


def test_every_documented_data_set_is_bundled():
    assert {info.name for info in list_datasets()} == set(EXPECTED_SHAPES)


@pytest.mark.parametrize("name", sorted(EXPECTED_SHAPES))
def test_bundled_data_set_loads_with_documented_shape(name):
    info = dataset_info(name)
    data = load_dataset(name)
    assert data.source == name
    assert info.citation and info.source and info.description
    if info.kind == "coins":
        assert isinstance(data, CoinData)
        assert data.heads.shape == data.tosses.shape == EXPECTED_SHAPES[name]
        assert data.heads.dtype == data.tosses.dtype == np.int64
        assert len(data.labels) == info.rows
    elif info.kind == "counts":
        assert isinstance(data, CountData)
        assert data.counts.shape == EXPECTED_SHAPES[name] == (info.rows,)
        assert data.counts.dtype == np.int64 and np.all(data.counts >= 0)
        assert (data.column,) == info.columns
        assert len(data.labels) == info.rows
    else:
        assert info.kind == "continuous"
        assert isinstance(data, ContinuousData)
        assert data.x.shape == EXPECTED_SHAPES[name] == (info.rows, len(info.columns))
        assert data.x.dtype == np.float64
        assert data.columns == info.columns
        assert len(data.labels) == info.rows
        assert np.all(np.isfinite(data.x))


def test_galaxies_row_78_is_roeders_value_not_the_mass_typo():
    galaxies = load_dataset("galaxies")
    assert galaxies.x[77, 0] == pytest.approx(26.960, abs=1e-12)


def test_coins_lecture_heads():
    coins = load_dataset("coins_lecture")
    np.testing.assert_array_equal(coins.heads, [5, 7, 8, 9, 4])
    np.testing.assert_array_equal(coins.tosses, [10] * 5)
    assert coins.true_coin is None


def test_do_batzoglou_heads_and_true_coin():
    coins = load_dataset("coins_do_batzoglou")
    np.testing.assert_array_equal(coins.heads, [5, 9, 8, 4, 7])
    np.testing.assert_array_equal(coins.true_coin, [1, 0, 0, 1, 0])  # B A A B A
    assert coins.true_coin.dtype == np.int64
    assert coins.labels == ("set 1", "set 2", "set 3", "set 4", "set 5")


def test_do_batzoglou_sequences_match_heads_and_tosses():
    coins = load_dataset("coins_do_batzoglou")
    sequences = coin_sequences("coins_do_batzoglou")
    assert [sequence.count("H") for sequence in sequences] == coins.heads.tolist()
    assert [len(sequence) for sequence in sequences] == coins.tosses.tolist()
    assert set("".join(sequences)) == {"H", "T"}


def test_coin_sequences_of_a_data_set_without_them():
    with raises_exactly("bundled data set 'coins_lecture' has no toss sequences; these do: coins_do_batzoglou"):
        coin_sequences("coins_lecture")


def test_heroes_file_is_kept_byte_for_byte():
    resource = importlib.resources.files("emvsbayes.data").joinpath("files", "heroes_gb18030.csv")
    digest = hashlib.sha256(resource.read_bytes()).hexdigest()
    assert digest == "6811e26992e1c7e7f181905a361000720f0de2dc7db0a45d7cadaabc780472dc"


def test_heroes_default_is_the_lessons_preprocessing():
    heroes = load_dataset("heroes")
    assert heroes.x.shape == (69, 12)
    assert heroes.columns == HEROES_COLUMNS
    assert heroes.labels[:3] == ("夏侯惇", "钟无艳", "张飞")
    np.testing.assert_allclose(heroes.x.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(heroes.x.std(axis=0, ddof=0), 1.0, rtol=1e-12)
    assert heroes.transforms == (
        "最大攻速: percent -> fraction",
        "攻击范围: 远程 -> 1, 近战 -> 0",
        "z-score all columns (population sd, ddof=0)",
    )

    raw = load_dataset("heroes", standardize=False)
    np.testing.assert_allclose(heroes.center, raw.x.mean(axis=0))
    np.testing.assert_allclose(heroes.scale, raw.x.std(axis=0, ddof=0))
    np.testing.assert_allclose(heroes.x * heroes.scale + heroes.center, raw.x, rtol=1e-12, atol=1e-9)


def test_heroes_unscaled_attack_range_and_speed():
    raw = load_dataset("heroes", standardize=False)
    assert raw.center is None and raw.scale is None
    attack_range = raw.x[:, HEROES_COLUMNS.index("攻击范围")]
    assert set(attack_range.tolist()) == {0.0, 1.0}
    assert raw.x[raw.labels.index("后羿"), HEROES_COLUMNS.index("攻击范围")] == 1.0  # a ranged hero (远程)
    attack_speed = raw.x[:, HEROES_COLUMNS.index("最大攻速")]
    assert np.all((attack_speed >= 0) & (attack_speed <= 1))
    # The published file gives two heroes 0.00%: those are the only fractions that are not in (0, 1].
    assert [raw.labels[i] for i in np.flatnonzero(attack_speed == 0)] == ["芈月", "嬴政"]
    assert attack_speed[raw.labels.index("夏侯惇")] == pytest.approx(0.28)


def test_heroes_options_pass_through():
    two = load_dataset("heroes", columns=["最大生命", "最大攻速"], standardize=False)
    assert two.columns == ("最大生命", "最大攻速")
    assert two.transforms == ("最大攻速: percent -> fraction",)
    assert two.x[0].tolist() == pytest.approx([7350.0, 0.28])
    dropped = load_dataset("heroes", drop=["攻击范围"])
    assert dropped.x.shape == (69, 11)


def test_unknown_data_set_name():
    with raises_exactly(
        "no bundled data set is called 'galaxy'; did you mean 'galaxies'? the bundled ones are: "
        "coins_do_batzoglou, coins_lecture, old_faithful, galaxies, acidity, enzyme, heroes, earthquakes"
    ) as excinfo:
        load_dataset("galaxy")
    assert_one_line(excinfo)


def test_unknown_load_dataset_option():
    with raises_exactly(
        "bundled data set 'heroes' has no option 'standardise'; its options are: "
        "columns, label, percent, categories, standardize, drop"
    ):
        load_dataset("heroes", standardise=False)


def test_coin_data_set_takes_no_options():
    with raises_exactly("bundled data set 'coins_lecture' takes no options; remove heads"):
        load_dataset("coins_lecture", heads="h")


def test_a_count_data_set_takes_its_own_column_and_label_as_its_spec_names_them():
    """models/earthquakes_hmm.toml names the series and its label ([data] columns = ["count"], label = "year"):
    load_dataset took neither ("takes no options"); the data set's own values pass, others are refused."""
    whole = load_dataset("earthquakes")
    named = load_dataset("earthquakes", columns=["count"], label="year", counts="count")
    np.testing.assert_array_equal(named.counts, whole.counts)
    assert named.labels == whole.labels and whole.labels[0] == "1900" and len(whole.counts) == 107
    with raises_exactly("bundled data set 'earthquakes' is read whole (column 'count', its rows named by 'year'); "
                        "remove columns, label"):
        load_dataset("earthquakes", columns=["rate"], label="decade")


# --- users' CSV files: what works --------------------------------------------------------------


def test_users_file_like_heroes_is_handled_the_same_way(tmp_path):
    path = write(
        tmp_path,
        "my_heroes.csv",
        "英雄,最大生命,最大攻速,攻击范围 \r\n"
        "甲,100,28.00%,远程\r\n乙,200,14.00%,近战\r\n丙,300,0.5%,近战\r\n",
        encoding="gb18030",
    )
    data = load_continuous_csv(
        path,
        encoding="gb18030",
        label="英雄",
        percent=["最大攻速"],
        categories={"攻击范围": {"远程": 1, "近战": 0}},
    )
    assert data.columns == ("最大生命", "最大攻速", "攻击范围")  # trailing space stripped
    assert data.labels == ("甲", "乙", "丙")
    np.testing.assert_allclose(data.x, [[100, 0.28, 1], [200, 0.14, 0], [300, 0.005, 0]])
    assert data.source == str(path)


def test_coins_csv_with_label_bom_blank_lines_and_spreadsheet_integers(tmp_path):
    path = write(tmp_path, "coins.csv", "\ufeffname,h,n\nfirst,3,10\n\nsecond, 10.0 ,10\n\n")
    coins = load_coins_csv(path, heads="h", tosses="n", label="name")
    np.testing.assert_array_equal(coins.heads, [3, 10])
    np.testing.assert_array_equal(coins.tosses, [10, 10])
    assert coins.labels == ("first", "second")
    assert coins.true_coin is None


def test_continuous_csv_default_labels_and_columns(tmp_path):
    path = write(tmp_path, "x.csv", "a,b\n1,2\n3,4\n")
    data = load_continuous_csv(path)
    assert data.labels == ("1", "2")
    assert data.columns == ("a", "b")
    assert data.transforms == ()
    np.testing.assert_array_equal(data.x, [[1.0, 2.0], [3.0, 4.0]])


# --- users' CSV files: one test per mistake, with the exact one-line message -------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.csv"
    with raises_exactly(f"data file {str(path)!r} does not exist; check the path") as excinfo:
        load_continuous_csv(path)
    assert_one_line(excinfo)


def test_wrong_encoding(tmp_path):
    path = write(tmp_path, "heroes.csv", "英雄,最大生命\n夏侯惇,7350\n", encoding="gb18030")
    # 英 in GB18030 is d3 a2, which happens to be a valid two-byte UTF-8 character; 雄 (d0 db) is not.
    with raises_exactly(
        "heroes.csv is not valid utf-8 (byte 0xd0 at offset 2); give its encoding, e.g. data.encoding = 'gb18030'"
    ) as excinfo:
        load_continuous_csv(path, label="英雄")
    assert_one_line(excinfo)


def test_unknown_encoding(tmp_path):
    path = write(tmp_path, "data.csv", "a\n1\n")
    with raises_exactly("data.csv: unknown encoding 'gb-18030'; give a Python codec name, e.g. 'utf-8' or 'gb18030'"):
        load_continuous_csv(path, encoding="gb-18030")


def test_empty_file(tmp_path):
    path = write(tmp_path, "data.csv", "\n\n")
    with raises_exactly("data.csv is empty; it needs a header line and at least one row of data") as excinfo:
        load_coins_csv(path)
    assert_one_line(excinfo)


def test_header_without_rows(tmp_path):
    path = write(tmp_path, "data.csv", "heads,tosses\n")
    with raises_exactly("data.csv has a header but no rows of data; add the data below line 1") as excinfo:
        load_coins_csv(path)
    assert_one_line(excinfo)


def test_missing_column_lists_the_columns(tmp_path):
    path = write(tmp_path, "data.csv", "h,n\n3,10\n")
    with raises_exactly(
        "data.csv: column 'heads' is missing (columns are: h, n); name the heads column with data.heads = '...'"
    ) as excinfo:
        load_coins_csv(path)
    assert_one_line(excinfo)


def test_missing_column_suggests_a_close_name(tmp_path):
    path = write(tmp_path, "data.csv", "head,tosses\n3,10\n")
    with raises_exactly(
        "data.csv: column 'heads' is missing (columns are: head, tosses); did you mean 'head'? "
        "If not, name the heads column with data.heads = '...'"
    ):
        load_coins_csv(path)


def test_missing_continuous_column(tmp_path):
    path = write(tmp_path, "data.csv", "waiting,eruptions\n79,3.6\n")
    with raises_exactly(
        "data.csv: column 'eruption' is missing (columns are: waiting, eruptions); did you mean 'eruptions'? "
        "If not, choose the columns with data.columns = [...]"
    ):
        load_continuous_csv(path, columns=["eruption"])


def test_ragged_row(tmp_path):
    path = write(tmp_path, "data.csv", "a,b\n1,2\n3,4,5\n")
    with raises_exactly(
        "data.csv: line 3 has 3 fields but the header has 2; check that line for a missing value or an unquoted comma"
    ):
        load_continuous_csv(path)


def test_non_numeric_value_suggests_categories(tmp_path):
    path = write(tmp_path, "data.csv", "size,range\n1.5,melee\n2.5,ranged\n")
    with raises_exactly(
        "data.csv: line 2, column 'range' is 'melee', not a number; if it names known groups, compare the clusters "
        "with them: [data] truth = \"range\"; if it is a category, map its values to numbers: "
        "[data] categories = {\"range\" = {\"melee\" = 0, ...}}; otherwise leave it out: [data] drop = [\"range\"] "
        "(or choose the numeric columns: [data] columns = [...])"
    ) as excinfo:
        load_continuous_csv(path)
    assert_one_line(excinfo)


def test_percent_string_suggests_percent(tmp_path):
    path = write(tmp_path, "data.csv", "speed\n10%\n28.00%\n")
    with raises_exactly(
        "data.csv: line 2, column 'speed' is '10%', not a number; it looks like a percent: "
        "convert the column with data.percent = ['speed']"
    ):
        load_continuous_csv(path)


def test_thousands_separator(tmp_path):
    path = write(tmp_path, "data.csv", 'life\n"7,350"\n')
    with raises_exactly(
        "data.csv: line 2, column 'life' is '7,350', not a number; remove the thousands separators from the file"
    ):
        load_continuous_csv(path)


def test_percent_column_without_percent_sign(tmp_path):
    path = write(tmp_path, "data.csv", "speed\n10%\n28\n")
    with raises_exactly(
        "data.csv: line 3, column 'speed' is '28' without a '%' sign, but the column is listed in data.percent; "
        "write it as a percent like '28%' or remove 'speed' from data.percent"
    ):
        load_continuous_csv(path, percent=["speed"])


def test_nan_value(tmp_path):
    path = write(tmp_path, "data.csv", "x\n1.0\nNaN\n")
    with raises_exactly(
        "data.csv: line 3, column 'x' is 'NaN', not a finite number; fill in the value or remove that row"
    ) as excinfo:
        load_continuous_csv(path)
    assert_one_line(excinfo)


def test_infinite_value(tmp_path):
    path = write(tmp_path, "data.csv", "x,y\n1.0,2\n3,-inf\n")
    with raises_exactly(
        "data.csv: line 3, column 'y' is '-inf', not a finite number; fill in the value or remove that row"
    ):
        load_continuous_csv(path)


def test_empty_cell(tmp_path):
    # Line numbers are those of the file: the header is line 1 and the blank line 3 still counts.
    path = write(tmp_path, "data.csv", "x,y\n1,2\n\n3, \n")
    with raises_exactly("data.csv: line 4, column 'y' is empty; fill it in or remove that row") as excinfo:
        load_continuous_csv(path)
    assert_one_line(excinfo)


def test_unmapped_category(tmp_path):
    path = write(tmp_path, "data.csv", "range\nmelee\nranged\nthrown\n")
    with raises_exactly(
        "data.csv: line 4, column 'range' is 'thrown', which data.categories['range'] does not map "
        "(it maps: melee, ranged); add 'thrown' to that mapping"
    ):
        load_continuous_csv(path, categories={"range": {"melee": 0, "ranged": 1}})


def test_category_mapped_to_a_non_number(tmp_path):
    path = write(tmp_path, "data.csv", "range\nmelee\n")
    with raises_exactly("data.categories['range']['melee'] is 'zero'; each category must map to a finite number"):
        load_continuous_csv(path, categories={"range": {"melee": "zero"}})


def test_percent_option_names_a_column_not_read(tmp_path):
    path = write(tmp_path, "data.csv", "a,speed\n1,10%\n")
    with raises_exactly(
        "data.csv: data.percent names column 'speed', which is not among the columns read (a); "
        "add it to data.columns or remove it from data.percent"
    ):
        load_continuous_csv(path, columns=["a"], percent=["speed"])


def test_standardize_constant_column(tmp_path):
    path = write(tmp_path, "data.csv", "a,b\n1,5\n2,5\n3,5\n")
    with raises_exactly(
        "data.csv: column 'b' is constant (5 in every row), so it cannot be standardized; "
        "leave it out with data.drop = ['b']"
    ) as excinfo:
        load_continuous_csv(path, standardize=True)
    assert_one_line(excinfo)
    assert load_continuous_csv(path, standardize=True, drop=["b"]).x.shape == (3, 1)


def test_duplicate_header_name(tmp_path):
    path = write(tmp_path, "data.csv", "a, a\n1,2\n")
    with raises_exactly("data.csv: column name 'a' appears more than once in the header; rename one"):
        load_continuous_csv(path)


def test_heads_not_an_integer(tmp_path):
    path = write(tmp_path, "data.csv", "heads,tosses\n3,10\n4.5,10\n")
    with raises_exactly(
        "data.csv: line 3, column 'heads' (heads) is '4.5', not a whole number; heads must be counts"
    ) as excinfo:
        load_coins_csv(path)
    assert_one_line(excinfo)


def test_tosses_not_a_number(tmp_path):
    path = write(tmp_path, "data.csv", "heads,tosses\n3,ten\n")
    with raises_exactly(
        "data.csv: line 2, column 'tosses' (tosses) is 'ten', not a whole number; tosses must be counts"
    ):
        load_coins_csv(path)


def test_empty_heads_cell(tmp_path):
    path = write(tmp_path, "data.csv", "heads,tosses\n,10\n")
    with raises_exactly("data.csv: line 2, column 'heads' (heads) is empty; fill it in or remove that row"):
        load_coins_csv(path)


def test_zero_tosses(tmp_path):
    path = write(tmp_path, "data.csv", "heads,tosses\n3,10\n0,0\n")
    with raises_exactly(
        "data.csv: line 3: tosses is 0; every set needs at least one toss, so fix the count or remove that row"
    ) as excinfo:
        load_coins_csv(path)
    assert_one_line(excinfo)


def test_more_heads_than_tosses(tmp_path):
    path = write(tmp_path, "data.csv", "heads,tosses\n11,10\n")
    with raises_exactly("data.csv: line 2: heads is 11 but tosses is 10; heads must be between 0 and tosses"):
        load_coins_csv(path)


def test_negative_heads(tmp_path):
    path = write(tmp_path, "data.csv", "heads,tosses\n-1,10\n")
    with raises_exactly("data.csv: line 2: heads is -1 but tosses is 10; heads must be between 0 and tosses"):
        load_coins_csv(path)


def test_heads_and_tosses_the_same_column(tmp_path):
    path = write(tmp_path, "data.csv", "n\n10\n")
    with raises_exactly("data.csv: data.heads and data.tosses both name column 'n'; name two different columns"):
        load_coins_csv(path, heads="n", tosses="n")


# --- simulation --------------------------------------------------------------------------------


def test_simulate_coins_is_reproducible_and_records_the_coin():
    theta, w = [0.2, 0.8], [0.3, 0.7]
    first = simulate_coins(theta, w, 10, np.random.default_rng(1), n_sets=50)
    again = simulate_coins(theta, w, 10, np.random.default_rng(1), n_sets=50)
    other = simulate_coins(theta, w, 10, np.random.default_rng(2), n_sets=50)
    np.testing.assert_array_equal(first.heads, again.heads)
    np.testing.assert_array_equal(first.true_coin, again.true_coin)
    assert not np.array_equal(first.heads, other.heads)
    assert first.true_coin.shape == (50,) and set(first.true_coin.tolist()) <= {0, 1}
    assert np.all((first.heads >= 0) & (first.heads <= first.tosses))


def test_simulate_coins_with_tosses_per_set():
    tosses = np.array([1, 5, 20, 100])
    coins = simulate_coins([0.5], [1.0], tosses, np.random.default_rng(0))
    np.testing.assert_array_equal(coins.tosses, tosses)
    assert coins.labels == ("set 1", "set 2", "set 3", "set 4")


def test_simulate_coins_frequencies_match_w_and_theta():
    n = 20_000
    theta, w = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.5, 0.3])
    coins = simulate_coins(theta, w, 20, np.random.default_rng(7), n_sets=n)
    frequency = np.bincount(coins.true_coin, minlength=3) / n
    # Binomial standard error sqrt(w (1 - w) / n) <= 0.0036 here; 5 standard errors gives a two-sided
    # false-failure probability below 1e-6 per component for a fresh seed (the seed is fixed anyway).
    np.testing.assert_array_less(np.abs(frequency - w), 5 * np.sqrt(w * (1 - w) / n))
    for k in range(3):
        chosen = coins.true_coin == k
        head_rate = coins.heads[chosen].sum() / coins.tosses[chosen].sum()
        n_tosses = coins.tosses[chosen].sum()
        assert abs(head_rate - theta[k]) < 5 * np.sqrt(theta[k] * (1 - theta[k]) / n_tosses)


def test_simulate_requires_a_generator():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        simulate_coins([0.5], [1.0], 10, 42, n_sets=3)


def test_simulate_coins_rejects_bad_weights():
    with raises_exactly("w must sum to 1; it sums to 0.9"):
        simulate_coins([0.2, 0.8], [0.5, 0.4], 10, np.random.default_rng(0), n_sets=3)


def test_simulate_gaussian_mixture_is_reproducible_and_records_the_component():
    w, mu, cov = separated_gaussian_mixture(3, 2, 4.0, np.random.default_rng(0))
    first = simulate_gaussian_mixture(100, w, mu, cov, np.random.default_rng(1))
    again = simulate_gaussian_mixture(100, w, mu, cov, np.random.default_rng(1))
    other = simulate_gaussian_mixture(100, w, mu, cov, np.random.default_rng(2))
    np.testing.assert_array_equal(first.x, again.x)
    np.testing.assert_array_equal(first.true_component, again.true_component)
    assert not np.array_equal(first.x, other.x)
    assert first.x.shape == (100, 2)
    assert first.columns == ("x1", "x2")
    assert first.true_component.shape == (100,)


def test_simulate_gaussian_mixture_frequencies_and_means():
    n = 20_000
    w = np.array([0.6, 0.3, 0.1])
    mu = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    cov = np.array([np.eye(2), [[2.0, 0.5], [0.5, 1.0]], 0.5 * np.eye(2)])
    data = simulate_gaussian_mixture(n, w, mu, cov, np.random.default_rng(11))
    frequency = np.bincount(data.true_component, minlength=3) / n
    # Binomial standard error sqrt(w (1 - w) / n) <= 0.0035; within 5 of them fails with
    # probability below 1e-6 per component for a fresh seed.
    np.testing.assert_array_less(np.abs(frequency - w), 5 * np.sqrt(w * (1 - w) / n))
    for k in range(3):
        rows = data.x[data.true_component == k]
        standard_error = np.sqrt(np.diag(cov[k]) / rows.shape[0])
        np.testing.assert_array_less(np.abs(rows.mean(axis=0) - mu[k]), 5 * standard_error)


@pytest.mark.parametrize(("n_components", "dim"), [(1, 1), (2, 1), (3, 2), (4, 5)])
def test_separated_gaussian_mixture_places_means_separation_sds_apart(n_components, dim):
    separation = 3.0
    w, mu, cov = separated_gaussian_mixture(n_components, dim, separation, np.random.default_rng(3))
    assert w.shape == (n_components,) and mu.shape == (n_components, dim) and cov.shape == (n_components, dim, dim)
    np.testing.assert_allclose(w.sum(), 1.0)
    np.testing.assert_allclose(mu.mean(axis=0), 0.0, atol=1e-12)
    np.linalg.cholesky(cov)  # every covariance is positive definite
    np.testing.assert_array_equal(cov, np.swapaxes(cov, 1, 2))
    if n_components > 1:
        steps = np.diff(mu, axis=0)
        np.testing.assert_allclose(np.linalg.norm(steps, axis=1), separation)
        direction = steps[0] / np.linalg.norm(steps[0])
        # The within-component sd along the line joining the means is 1, so `separation` is in sds.
        np.testing.assert_allclose(np.einsum("i,kij,j->k", direction, cov, direction), 1.0)
