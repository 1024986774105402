"""Studies of the hidden Markov model family (issue 19): its study members, the bundled SBC spec, the
label-invariant quantities of a transition matrix, the ordered model's prior draws, and bad study specs.

The SBC of the Poisson HMM on a Dask cluster (correct model passes, a wrong prior fails) is in
``tests/test_study.py`` beside the coins' one, sharing its cluster.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ORACLE_MODE, ROOT, run_cli
from emvsbayes.errors import UserError
from emvsbayes.family import get_family
from emvsbayes.hmm.model import HiddenMarkovModel, HMMPriors
from emvsbayes.study.sbc import invariant_quantities, rank_statistics
from emvsbayes.study.spec import cells, load_study_spec, validate

FAMILY = get_family("hmm")

TINY = {"kind": "sbc", "seed": 3, "replicates": 2, "model": {"family": "hmm"},
        "grid": {"n_time": [40], "variant": ["ordered"]}, "bayes": {"chains": 2, "draws": 50, "tune": 50},
        "sbc": {"ranks": 49, "bins": 5}}


def test_the_bundled_sbc_spec_validates_as_a_poisson_hmm_with_ordered_rates():
    spec = load_study_spec(ROOT / "models" / "sbc_poisson_hmm.toml")
    (cell,) = cells(spec)
    assert spec["model"]["family"] == "hmm" and spec["kind"] == "sbc"
    assert cell["components"] == 2 and cell["emission"] == "poisson" and cell["variant"] == "ordered"
    model = FAMILY.study_model(spec, cell, spec["priors"][cell["prior"]])
    assert model == HiddenMarkovModel(2, "poisson", "estimated", True,
                                      HMMPriors(None, 1.0, (2.0, 0.2), 0.0, 5.0, 2.0))
    # enough replicates for the chi-square test (at least 5 per bin: Cochran's rule) with room to spare
    assert spec["replicates"] >= 20 * spec["sbc"]["bins"]


def test_a_cells_series_has_the_cells_length_and_round_trips_through_the_arrays():
    spec = validate(TINY)
    (cell,) = cells(spec)
    model = FAMILY.study_model(spec, cell, spec["priors"]["default"])
    truth = FAMILY.prior_draw(model, np.random.default_rng(1))
    data = FAMILY.study_data(model, truth, cell, np.random.default_rng(2))
    assert data.n_time == 40 and FAMILY.study_shape(cell) == (40, 1)
    back = FAMILY.from_arrays(FAMILY.as_arrays(data))
    np.testing.assert_array_equal(back.y, data.y)
    assert np.all(data.y == np.round(data.y)) and np.all(data.y >= 0)


def test_a_coverage_cells_truth_is_a_sticky_chain_with_the_cells_rates():
    spec = validate({"kind": "coverage", "seed": 1, "replicates": 2, "model": {"family": "hmm"},
                     "grid": {"components": [3], "stay": [0.8]}})
    (cell,) = cells(spec)
    model = FAMILY.study_model(spec, cell, spec["priors"]["default"])
    truth = FAMILY.study_truth(spec, cell, model, np.random.default_rng(0))
    model.validate_params(truth)
    np.testing.assert_allclose(np.diag(truth.transition), 0.8)
    np.testing.assert_allclose(truth.rate, (2.0 + 1.5 * np.arange(3)) ** 2)
    # the uniform initial distribution is this chain's stationary one
    np.testing.assert_allclose(truth.initial @ truth.transition, truth.initial)


def test_sorting_by_rate_permutes_the_rows_and_the_columns_of_the_transition_matrix():
    """Draw 0 has its states in the order of increasing rate, draw 1 the other way round: after sorting,
    both must read the same matrix (entry [0, 1] is the move from the low-rate state to the high-rate one).
    Sorting the rows alone gives draw 1 the matrix [[0.3, 0.7], [0.9, 0.1]]."""
    transition = np.array([[0.9, 0.1], [0.3, 0.7]])
    swapped = transition[::-1, ::-1]
    variables = {"rate": np.array([[1.0, 5.0], [5.0, 1.0]]), "transition": np.stack([transition, swapped]),
                 "initial": np.array([[0.2, 0.8], [0.8, 0.2]])}
    label_axes = {name: len(info.label_dims) for name, info in FAMILY.parameters(HiddenMarkovModel()).items()}
    assert label_axes == {"initial": 1, "transition": 2, "rate": 1}
    out = invariant_quantities("rate", variables, label_axes)
    for i in range(2):
        for j in range(2):
            np.testing.assert_array_equal(out[f"transition_sorted[{i},{j}]"], [transition[i, j]] * 2)
    np.testing.assert_array_equal(out["rate_sorted[0]"], [1.0, 1.0])
    np.testing.assert_array_equal(out["initial_sorted[0]"], [0.2, 0.2])
    # a single truth (no draw axis) is sorted the same way, and ranks against draws by name
    truth = invariant_quantities("rate", {name: value[1] for name, value in variables.items()}, label_axes)
    assert truth["transition_sorted[0,1]"] == 0.1
    assert rank_statistics(out, truth, 2)["transition_sorted[0,1]"] == 0.0


def test_the_ordered_models_prior_draws_keep_each_transition_rows_own_dirichlet():
    """The ordered model (PyMC's) is the symmetric prior restricted to increasing rates, with the transition
    rows independent of the rates: row 0 ~ Dirichlet(20, 1) whatever the rates. Permuting the matrix with
    the rates' order would give row 0 the other row's (swapped) prior half the time, E[transition[0, 0]]
    about (20/21 + 1/2) / 2 = 0.73 instead of 20/21 = 0.952. Tolerance: 5 Monte Carlo standard errors of the
    mean of 4000 draws (Beta(20, 1) sd 0.045, MCSE 0.0007), a false failure rate below 1e-6."""
    model = HiddenMarkovModel(2, "poisson", ordered=True,
                              priors=HMMPriors(transition_concentration=((20.0, 1.0), (1.0, 1.0)), rate_prior=(2.0, 0.2)))
    rng = np.random.default_rng(2026)
    draws = [FAMILY.prior_draw(model, rng) for _ in range(4000)]
    stay = np.array([d.transition[0, 0] for d in draws])
    sd = np.sqrt(20 * 1 / (21**2 * 22))
    assert abs(stay.mean() - 20 / 21) < 5 * sd / np.sqrt(stay.size), stay.mean()
    assert all(d.rate[0] <= d.rate[1] for d in draws)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"grid": {"components": [3], "n_time": [2]}}, "a cell has K = 3 components but only 2 observations"),
        ({"bayes": {"transition_prior": [[1, 1, 1], [1, 1, 1], [1, 1, 1]]}},
         "[bayes] transition_prior is 3 x 3 but a cell has K = 2 states; give a 2 x 2 table"),
        ({"priors": {"sticky": {"transition_prior": [[5, 1], [1]]}}, "grid": {"prior": ["sticky"]}},
         "[priors.sticky] transition_prior is 2 rows of 2, 1 numbers but a cell has K = 2 states"),
        ({"bayes": {"transition_prior": [1, 2]}}, "[bayes] transition_prior must be a positive number or a K x K table"),
        ({"bayes": {"rate_prior": [2]}}, "[bayes] rate_prior must be [shape, rate]"),
        ({"grid": {"emission": ["binomial"]}}, "[grid] emission has an item that must be one of 'poisson', 'gaussian', got 'binomial'"),
    ],
)
def test_bad_hmm_study_specs_are_one_line_errors(change, expected):
    raw = {**TINY, **{key: {**TINY.get(key, {}), **value} for key, value in change.items()}}
    with pytest.raises(UserError) as caught:
        validate(raw, source="s.toml")
    message = str(caught.value)
    assert expected in message and "\n" not in message, message


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("[grid]\ncomponents = [3]\nn_time = [2]",
         "a cell has K = 3 components but only 2 observations; lower [grid] components or raise the data size"),
        ("[bayes]\ntransition_prior = [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]\n[grid]\ncomponents = [2]",
         "[bayes] transition_prior is 2 x 3 but a cell has K = 2 states; give a 2 x 2 table (row i: the Dirichlet "
         "prior of the transitions out of state i) or one number"),
    ],
)
def test_a_study_with_k_above_the_series_or_a_misshapen_transition_prior_exits_2(table, expected, tmp_path):
    from test_bad_inputs import assert_user_error

    spec = tmp_path / "hmm_bad.toml"
    spec.write_text('kind = "sbc"\nseed = 1\nreplicates = 2\n[model]\nfamily = "hmm"\n' + table + "\n",
                    encoding="utf-8")
    out = tmp_path / "out"
    assert_user_error(run_cli("study", spec, "--out", out, timeout=120), f"{spec}: {expected}", out)


def test_the_study_model_with_a_container_has_the_log_density_of_the_model_with_the_series_built_in():
    """A study swaps each replicate's series into one compiled model: its log density after ``pm.set_data``
    must be that of the run's model built with that series as a constant (same point, to rounding)."""
    import pymc as pm

    from emvsbayes.study.replicate import model_with_containers

    spec = validate(TINY)
    (cell,) = cells(spec)
    model_def = FAMILY.study_model(spec, cell, spec["priors"]["default"])
    truth = FAMILY.prior_draw(model_def, np.random.default_rng(4))
    first, second = (FAMILY.study_data(model_def, truth, cell, np.random.default_rng(seed)) for seed in (5, 6))
    assert not np.array_equal(first.y, second.y)
    swapped = model_with_containers("hmm", model_def, FAMILY.as_arrays(first))
    point = swapped.initial_point()
    # FAST_COMPILE: PyTensor's Python linker (the default would compile each model with numba, ~10 s apiece)
    logp = swapped.compile_logp(mode=ORACLE_MODE)
    for data in (second, first):
        pm.set_data({"y_data": data.y}, model=swapped)
        built_in = FAMILY.pymc_model(model_def, data).compile_logp(mode=ORACLE_MODE)(point)
        np.testing.assert_allclose(logp(point), built_in, rtol=1e-12)


@pytest.mark.slow  # compiles the Gaussian HMM's numpyro programs (about 30 s)
def test_an_sbc_replicate_of_the_gaussian_hmm_with_a_stationary_start_ranks_every_parameter():
    """The other emission and initial distribution through the same generic replicate: the stationary
    initial distribution is a deterministic of the transition matrix (ranked too: SBC holds for any function
    of the parameters), and mu orders the states."""
    from emvsbayes.hmm.model import stationary_distribution
    from emvsbayes.study.sbc import run_sbc_replicate

    spec = validate({**TINY, "grid": {"n_time": [60], "emission": ["gaussian"], "initial": ["stationary"],
                                      "variant": ["ordered"]}})
    (cell,) = cells(spec)
    record = run_sbc_replicate(spec, 0, 0, cell)
    ranks, truth = record["values"]["rank"], record["values"]["truth"]
    names = {"initial_sorted[0]", "initial_sorted[1]", "mu_sorted[0]", "mu_sorted[1]", "sigma_sorted[0]",
             "sigma_sorted[1]", *(f"transition_sorted[{i},{j}]" for i in range(2) for j in range(2))}
    assert set(ranks) == names and all(0 <= r <= 49 for r in ranks.values())
    assert truth["mu_sorted[0]"] < truth["mu_sorted[1]"]
    transition = np.array([[truth["transition_sorted[0,0]"], truth["transition_sorted[0,1]"]],
                           [truth["transition_sorted[1,0]"], truth["transition_sorted[1,1]"]]])
    np.testing.assert_allclose([truth["initial_sorted[0]"], truth["initial_sorted[1]"]],
                               stationary_distribution(transition), rtol=1e-12)


def test_a_coverage_replicates_bootstrap_of_a_series_is_parametric():
    """The time points of a series cannot be resampled (the family's resample is None): the study's bootstrap
    simulates from EM's answer, as a run's does. Resampling rows made every refit fail (NaN intervals)."""
    from emvsbayes.study.replicate import run_coverage_replicate

    spec = validate({"kind": "coverage", "seed": 1, "replicates": 1, "model": {"family": "hmm"},
                     "grid": {"n_time": [80], "initial": ["stationary"]}, "em": {"n_init": 2},
                     "intervals": {"kinds": ["bootstrap"], "bootstrap": 5}})
    (cell,) = cells(spec)
    record = run_coverage_replicate(spec, 0, 0, cell)
    assert record["scalars"]["bootstrap_failed"] == 0.0
    lower, upper = record["values"]["bootstrap_lower"], record["values"]["bootstrap_upper"]
    assert set(lower) == {"initial[0]", "initial[1]", "rate[0]", "rate[1]",
                          *(f"transition[{i},{j}]" for i in range(2) for j in range(2))}
    assert all(np.isfinite(lower[p]) and lower[p] <= upper[p] for p in lower)
