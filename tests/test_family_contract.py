"""The contract every model family meets (issue 17 item 5), in the style of dynamax's model tests: one set of
tests, parametrised over the registry (:data:`emvsbayes.family.FAMILIES`), so a new family is tested the
moment it is registered, and is not done until it passes.

Each family gives a small example (``family.example()``: a model definition, true parameters and a sample
size); the tests simulate from it with a fixed seed and check, with no sampling:

- EM from a start near the truth never lowers the observed log-likelihood;
- the one symbolic log-likelihood (the Hessian's) equals the numpy one;
- the PyMC model's log-density of the data equals the family's log-likelihood (the likelihood part: the
  observed variables' log-probability, priors left out, at the parameters mapped by ``initvals``);
- the parameter record's ``permuted`` moves every declared label dim, and relabelling a permuted fit
  (pivot to the fit) recovers it;
- simulate -> fit recovers the truth within 5 Hessian standard errors per element;
- the Hessian standard errors equal those from central finite differences of the numpy log-likelihood.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ORACLE_MODE
from emvsbayes.family import ParameterInfo, family_names, get_family
from emvsbayes.labels import pivot
from emvsbayes.uncertainty import compile_information, information_function, standard_errors

FAMILIES = family_names()


@pytest.fixture(scope="module", params=FAMILIES)
def case(request):
    """(family, model_def, truth, data, fit) with the data simulated at a fixed seed and EM run from a start
    near the truth (the truth moved by 0.3 in every unconstrained coordinate)."""
    family = get_family(request.param)
    model_def, truth, n = family.example()
    rng = np.random.default_rng(20260417)
    data = family.simulate(model_def, truth, n, rng)
    phi = family.to_unconstrained(model_def, truth)
    start = family.from_unconstrained(model_def, data, phi + 0.3 * rng.choice([-1.0, 1.0], size=phi.size))
    fit = family.fit(model_def, data, start, tol=1e-12, max_iter=2000)
    return family, model_def, truth, data, fit


def _flat(family, params) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in family.variables(params).values()])


def test_the_family_declares_its_parameters(case):
    family, model_def, truth, data, fit = case
    info = family.parameters(model_def, data)
    variables = family.variables(truth)
    assert list(info) == list(variables)  # report order is the variables' order
    k = model_def.n_components
    for name, declared in info.items():
        assert isinstance(declared, ParameterInfo)
        assert len(declared.dims) == np.ndim(variables[name]), name
        assert set(declared.label_dims) <= set(declared.dims), name
        for dim in declared.label_dims:  # a label dim runs over the components
            assert np.shape(variables[name])[declared.dims.index(dim)] == k, (name, dim)
    assert family.n_observations(data) == n_rows(family, data)
    assert isinstance(family.title, str) and family.title and family.title != family.name  # the family in words
    assert len(family.unconstrained_names(model_def, data)) == family.to_unconstrained(model_def, truth).size


def n_rows(family, data) -> int:
    return int(family.responsibilities(family.example()[0], data, family.example()[1]).shape[0])


def test_em_never_lowers_the_log_likelihood(case):
    family, model_def, truth, data, fit = case
    path = fit.loglik_path
    assert fit.converged and path.size > 3
    # Rounding only: each step's gain is >= 0 up to 1e-12 of |loglik| (about 10^4 float64 ulps).
    assert np.all(np.diff(path) >= -1e-12 * np.abs(path[1:]))
    assert fit.loglik == pytest.approx(family.loglik(model_def, data, fit.params), rel=1e-12)
    # The E-step's log-likelihood is the numpy one, and the responsibilities sum to 1 per observation.
    _, e_loglik = family.e_step(model_def, data, fit.params)
    assert e_loglik == pytest.approx(fit.loglik, rel=1e-10)
    np.testing.assert_allclose(family.responsibilities(model_def, data, fit.params).sum(axis=1), 1.0, rtol=1e-12)


def test_symbolic_log_likelihood_equals_the_numpy_one(case):
    family, model_def, truth, data, fit = case
    phi, loglik = family.symbolic_loglik(model_def, data)
    fn = compile_information(phi, [], loglik)
    for params in (truth, fit.params):
        value = fn(family.to_unconstrained(model_def, params))[0]
        assert float(value) == pytest.approx(family.loglik(model_def, data, params), rel=1e-10)
    # and the unconstrained map is a bijection: phi -> params -> phi
    phi0 = family.to_unconstrained(model_def, fit.params)
    np.testing.assert_allclose(family.to_unconstrained(model_def, family.from_unconstrained(model_def, data, phi0)), phi0,
                               rtol=1e-10, atol=1e-12)


def test_pymc_likelihood_equals_the_familys(case):
    """The observed variables' log-probability in the PyMC model (the likelihood; priors left out) at the
    parameters ``initvals`` maps a parameter record to, against the numpy log-likelihood."""
    from pymc.initial_point import make_initial_point_fn

    family, model_def, truth, data, fit = case
    model = family.pymc_model(model_def, data)
    point = make_initial_point_fn(model=model, overrides=family.initvals(model_def, [truth])[0], jitter_rvs=set(),
                                  return_transformed=True)(0)
    # The likelihood is the observed variables' log-probability, or a Potential where the family adds it so (a
    # hidden Markov model's forward algorithm: its states are summed out, nothing is observed by a distribution).
    import pytensor.tensor as pt

    terms = (model.logp(vars=model.observed_RVs, jacobian=False, sum=False) if model.observed_RVs else [])
    terms += list(model.replace_rvs_by_values(model.potentials))
    logp = model.compile_fn(pt.sum([pt.sum(term) for term in terms]), inputs=model.value_vars, on_unused_input="ignore",
                            mode=ORACLE_MODE)
    assert float(logp(point)) == pytest.approx(family.loglik(model_def, data, truth), rel=1e-9)


def permute_labels(variables: dict, info: dict[str, ParameterInfo], perm: np.ndarray) -> dict:
    """Every variable with ``perm`` applied along each of its declared label dims (new j = old perm[j])."""
    out = {}
    for name, value in variables.items():
        value = np.asarray(value)
        for dim in info[name].label_dims:
            value = np.take(value, perm, axis=info[name].dims.index(dim))
        out[name] = value
    return out


def label_axes(info: dict[str, ParameterInfo]) -> dict[str, tuple[int, ...]]:
    """Each variable's label axes as the labels module takes them: positions in (draw, *dims)."""
    return {name: tuple(1 + declared.dims.index(dim) for dim in declared.label_dims) for name, declared in info.items()}


def test_relabelling_a_permuted_fit_recovers_it(case):
    family, model_def, truth, data, fit = case
    info = family.parameters(model_def, data)
    k = model_def.n_components
    perm = np.roll(np.arange(k), 1)
    permuted = fit.params.permuted(perm)
    # The record's own relabelling moves exactly the declared label dims.
    expected = permute_labels(family.variables(fit.params), info, perm)
    for name, value in family.variables(permuted).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    # Pivoting the permuted answer to the fit finds the permutation that undoes it.
    reference = family.variables(fit.params)
    draws = {name: np.asarray(value)[None] for name, value in family.variables(permuted).items()}
    found = pivot(draws, reference, label_axes=label_axes(info)).perms[0]
    back = permute_labels(family.variables(permuted), info, found)
    for name, value in reference.items():
        np.testing.assert_allclose(back[name], value, rtol=0, atol=0, err_msg=name)
    # The log-likelihood does not see labels.
    assert family.loglik(model_def, data, permuted) == pytest.approx(fit.loglik, rel=1e-12)


def test_simulate_then_fit_recovers_the_truth(case):
    """|estimate - truth| <= 5 se per element, se from the observed information at the fit. The MLE is
    asymptotically normal with sd ~ se, so each element fails with probability ~6e-7; the seed is fixed, so
    the test is deterministic, and an error in the simulator, the EM steps or the information (a factor 2
    in a variance, a transposed mean) moves estimates or se by far more than that."""
    family, model_def, truth, data, fit = case
    reference = family.variables(truth)
    draws = {name: np.asarray(value)[None] for name, value in family.variables(fit.params).items()}
    aligned = fit.params.permuted(pivot(draws, reference, label_axes=label_axes(family.parameters(model_def, data))).perms[0])
    se = standard_errors(family, model_def, data, aligned, level=0.95)
    assert not se.singular, se.reason
    for name, value in family.variables(aligned).items():
        error = np.abs(np.asarray(value) - np.asarray(reference[name]))
        free = se.se[name] > 0  # fixed parameters (equal weights) have se 0 and equal the truth
        assert np.all(error[free] <= 5 * se.se[name][free]), (name, error, se.se[name])
        np.testing.assert_allclose(np.asarray(value)[~free], np.asarray(reference[name])[~free], atol=1e-12)


def _fd_hessian(f, x: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Central second differences; error O(step^2) ~ 1e-8 relative for these smooth log-likelihoods."""
    p = x.size
    h = np.empty((p, p))
    for i in range(p):
        for j in range(p):
            def at(di, dj):
                y = x.copy()
                y[i] += di
                y[j] += dj
                return f(y)
            h[i, j] = (at(step, step) - at(step, -step) - at(-step, step) + at(-step, -step)) / (4 * step**2)
    return h


def _fd_jacobian(f, x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    return np.stack([(f(x + step * e) - f(x - step * e)) / (2 * step) for e in np.eye(x.size)], axis=1)


def test_hessian_standard_errors_match_finite_differences(case):
    """The symbolic Hessian against central differences of the numpy log-likelihood (rtol 1e-4: the second
    differences' truncation and rounding, ~|l| eps / step^2 = 1e-6 of the largest entry), and the delta-method
    standard errors built from the finite-difference Hessian and Jacobian (rtol 1e-3)."""
    family, model_def, truth, data, fit = case
    phi = family.to_unconstrained(model_def, fit.params)

    def loglik(point):
        return family.loglik(model_def, data, family.from_unconstrained(model_def, data, point))

    _, gradient, hessian, natural, jacobian = information_function(family, model_def, data)(phi)
    fd = _fd_hessian(loglik, phi)
    np.testing.assert_allclose(hessian, fd, rtol=1e-4, atol=1e-4 * np.abs(fd).max())
    np.testing.assert_allclose(natural, _flat(family, fit.params), rtol=1e-10, atol=1e-12)
    fd_jac = _fd_jacobian(lambda point: _flat(family, family.from_unconstrained(model_def, data, point)), phi)
    np.testing.assert_allclose(jacobian, fd_jac, rtol=1e-5, atol=1e-7)
    se = standard_errors(family, model_def, data, fit.params)
    cov = np.linalg.inv(-fd)
    expected = np.sqrt(np.maximum(np.einsum("mp,pq,mq->m", fd_jac, cov, fd_jac), 0.0))
    got = np.concatenate([np.ravel(se.se[name]) for name in family.variables(fit.params)])
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-9)


class _ProtocolOnly:
    """A family offering the protocol's members only (the optional ones of the runner hidden), as a new
    family written against PROTOCOL.md would."""

    HIDDEN = {"coords", "trace_stats", "estimate_attrs", "fit_resp", "restart_batches", "posterior_group",
              "model_recipe", "target_accept", "posterior_draws", "order_var", "model_choice_model",
              "model_choice_run", "model_choice_checks", "model_choice_attrs", "information_function"}

    def __init__(self, family):
        self._family = family

    def __getattr__(self, name):
        if name in self.HIDDEN:
            raise AttributeError(name)
        return getattr(self._family, name)


def test_the_runner_needs_only_the_protocols_members():
    """The generic runner fits a family that has no optional member (EM, information, bootstrap, model
    choice; no sampling), and gets the same EM answer and standard errors as with the family's own."""
    from emvsbayes import runner
    from emvsbayes.pipeline import child_seeds
    from emvsbayes.spec import validate

    family = get_family("coins")
    spec = validate({"data": {"dataset": "coins_lecture"}, "model": {"family": "coins"},
                     "em": {"init": [0.5, 0.9], "bootstrap": 5}, "bayes": {"enabled": False},
                     "model_choice": {"components": [1, 2], "bayes": False}})
    data = family.load_data(spec)
    own = runner.run(family, spec, data, child_seeds(1), {}, None)
    plain = runner.run(_ProtocolOnly(family), spec, data, child_seeds(1), {}, None)
    for group in ("em", "em_information", "em_bootstrap", "model_choice"):
        # log_evidence is the coins' own criterion (model_choice_checks, hidden here)
        compared = [name for name, value in own[group].data_vars.items() if value.dtype.kind == "f"
                    and name != "log_evidence"]
        assert compared and set(compared) <= set(plain[group].data_vars), group
        for name in compared:
            np.testing.assert_allclose(plain[group][name].values, own[group][name].values, rtol=1e-9,
                                       err_msg=f"{group}/{name}")


@pytest.mark.parametrize("name", FAMILIES)
def test_shared_keys_a_family_reads_are_declared_and_flagged(name):
    """A shared spec key that a family lists in spec_defaults is one only some families read: the schema flags it
    ``family_only`` (so the families that do not read it refuse a value other than its default) and the family gives
    the schema's default. A key no family lists would be refused by every family: none is flagged so."""
    from emvsbayes.spec import SCHEMA

    for section, keys in get_family(name).spec_defaults().items():
        for key, default in keys.items():
            if key in SCHEMA.get(section, {}):
                rule = SCHEMA[section][key]
                assert rule.family_only, (section, key)
                assert default == rule.default, (section, key)
    flagged = {(section, key) for section, keys in SCHEMA.items() for key, rule in keys.items() if rule.family_only}
    declared = {(section, key) for family in FAMILIES for section, keys in get_family(family).spec_defaults().items()
                for key in keys}
    assert flagged <= declared, flagged - declared


def test_a_flagged_key_given_to_a_family_that_does_not_read_it_is_refused():
    """Every flagged shared key, given a value other than its default in a spec of each family that does not list it,
    is refused naming the key and the families that read it; the default itself is accepted in a spec dict (a spec
    written out with every key, as Comparison.to_spec writes it, loads again) and refused in a spec as a person
    wrote it (a TOML file: ``weights = "equal"`` read as equal weights in a mixture that estimates them)."""
    from emvsbayes.spec import SCHEMA, ignored_by_family

    for section, keys in SCHEMA.items():
        for key, rule in keys.items():
            if not rule.family_only:
                continue
            readers = [f for f in FAMILIES if key in get_family(f).spec_defaults().get(section, {})]
            for family in FAMILIES:
                assert ignored_by_family(section, key, rule.default, rule, family) is None
                problem = ignored_by_family(section, key, ("another value",), rule, family)
                # as a person wrote it (a TOML file, compare's options) even the default is refused
                written = ignored_by_family(section, key, rule.default, rule, family, written=True)
                if family in readers:
                    assert problem is None and written is None, (section, key, family)
                    continue
                assert written == problem, (section, key, family)
                titles = [get_family(f).title for f in readers]
                assert problem.startswith(f"[{section}] {key} applies to ") and all(t in problem for t in titles)
                assert f"not to {get_family(family).title}; remove it" in problem


@pytest.mark.parametrize("name", ["gaussian", "poisson", "hmm"])
def test_a_k_with_as_many_free_parameters_as_numbers_of_data_is_ill_posed(name):
    """Model choice's checks before EM: with at least as many free parameters as numbers in the data the K is noted
    ill-posed and its posterior not sampled (an HMM of 10 states has 120 parameters: on 15 points it was sampled
    without a word); one number more and it is fitted as any other K. The coins are left out: their exact posterior
    is computed for every K."""
    family = get_family(name)
    model_def, truth, _ = family.example()
    rng = np.random.default_rng(20261205)
    n_params = family.n_free_parameters(model_def, family.simulate(model_def, truth, 50, rng))
    per_row = {"gaussian": 2, "poisson": 1, "hmm": 1}[name]  # numbers per row (the Gaussian example is 2-D)
    rows = n_params // per_row  # the most rows holding at most n_params numbers
    few = family.simulate(model_def, truth, rows, rng)
    checks = family.model_choice_checks(model_def, few, None)
    assert checks["skip_bayes"] and checks["late_notes"] == [
        f"ill-posed: {n_params} free parameters for the {rows * per_row} numbers in the data"]
    enough = family.simulate(model_def, truth, rows + 1, rng)  # more numbers than parameters
    checks = family.model_choice_checks(model_def, enough, None)
    assert not checks["skip_bayes"] and checks["late_notes"] == []


@pytest.mark.parametrize("name", FAMILIES)
def test_data_given_in_memory_write_a_csv_the_familys_reader_reads_back_to_the_same_numbers(name, tmp_path):
    """``Comparison.to_spec`` reruns an in-memory comparison from the CSV its family writes (``data_csv``) and the
    [data] keys it gives: the family's file reader must read that text back into the very numbers simulated
    (the oracle: the simulated record itself, compared array by array)."""
    import dataclasses

    from emvsbayes.spec import validate

    family = get_family(name)
    model_def, truth, n = family.example()
    simulated = family.simulate(model_def, truth, n, np.random.default_rng(3))
    spec = validate({"data": {"file": str(tmp_path / "data.csv")}, "model": {"family": name}})
    record, raw = family.data_from_memory(simulated, spec, "compare")
    assert record is simulated
    text, keys = family.data_csv(record, raw)
    (tmp_path / "data.csv").write_text(text, encoding="utf-8")
    again = family.load_data(validate({"data": {"file": str(tmp_path / "data.csv"), **keys}, "model": {"family": name}}))
    arrays = [field.name for field in dataclasses.fields(simulated)
              if isinstance(getattr(simulated, field.name), np.ndarray) and "true" not in field.name]
    assert arrays, "the record holds its numbers in arrays"
    for field in arrays:
        np.testing.assert_array_equal(getattr(again, field), getattr(simulated, field), err_msg=field)
