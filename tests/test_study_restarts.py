"""A study replicate's EM restarts run as one batch (issue 21 item 7), against the oracle: the same starts fitted
one after another, as replicates did before, with :func:`emvsbayes.em.fit_em` per start.

What a replicate records must not move: the best fit (and so the sampler's starting point, the bootstrap's
and the Wald intervals' centre) bit for bit, the number of failed starts and of distinct optima exactly; the
other starts' fits to rounding (the batch sums in another order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from emvsbayes.em import BatchedEMFit, EMFit, EMIteration
from emvsbayes.errors import DegenerateFitError
from emvsbayes.study import replicate as rep
from emvsbayes.study.spec import cells, load_study_spec

FIELDS = ("w", "mu", "prec_chol")


def one_at_a_time(family, model_def, data, spec, rng) -> rep.EMOutcome:
    """The oracle: every start fitted on its own, in order; the first of the highest log-likelihoods is best."""
    fits, failed = [], 0
    for init in family.random_starts(model_def, data, spec["em"]["n_init"], rng):
        try:
            fits.append(family.fit(model_def, data, init, **rep.em_options(spec)))
        except rep.FIT_FAILURES:
            failed += 1
    return rep.EMOutcome(max(fits, key=lambda fit: fit.loglik), tuple(fits), failed)


def _replicate_data(spec, cell_index, replicate):
    family = rep.study_family(spec)
    cell = cells(spec)[cell_index]
    model_def = family.study_model(spec, cell, rep.cell_prior(spec, cell))
    seeds = rep.replicate_seeds(spec["seed"], cell_index, replicate)
    truth = family.study_truth(spec, cell, model_def, rep.cell_rng(spec["seed"], cell_index))
    data = family.study_data(model_def, truth, cell, np.random.default_rng(seeds["data"]))
    return family, model_def, data


# The bundled coverage study's N = 50, 2-sd cell: replicate 1 has starts whose fits are the batch's own (not
# near the best), 5 a start at a second optimum (0.94 lower), 4 four starts at one optimum (all run again).
@pytest.mark.parametrize("replicate", [1, 4, 5])
def test_batched_restarts_of_a_replicate_give_the_one_at_a_time_answer(replicate):
    spec = load_study_spec("models/study_coverage_gmm.toml")
    family, model_def, data = _replicate_data(spec, 0, replicate)
    # Each call gets a fresh generator of the replicate's EM seed (random_starts spawns children from it).
    em_rng = lambda: np.random.default_rng(rep.replicate_seeds(spec["seed"], 0, replicate)["em"])  # noqa: E731
    batched = rep.fit_em(family, model_def, data, spec, em_rng())
    oracle = one_at_a_time(family, model_def, data, spec, em_rng())

    # The best, bit for bit: which of several starts at one optimum is best turns on the last bits.
    assert batched.best.loglik == oracle.best.loglik
    assert (batched.best.n_iter, batched.best.converged) == (oracle.best.n_iter, oracle.best.converged)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(batched.best.params, name), getattr(oracle.best.params, name))
    assert batched.n_failed == oracle.n_failed
    assert rep.n_distinct_optima(family, model_def, batched.fits) == rep.n_distinct_optima(family, model_def, oracle.fits)
    # The same starts, in order, each fit as fit_em gives it to rounding.
    assert len(batched.fits) == len(oracle.fits)
    for a, b in zip(batched.fits, oracle.fits, strict=True):
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(a.init_params, name), getattr(b.init_params, name))
            np.testing.assert_allclose(getattr(a.params, name), getattr(b.params, name), rtol=0, atol=1e-10)
        assert a.loglik == pytest.approx(b.loglik, rel=0, abs=1e-10)
        assert (a.n_iter, a.converged) == (b.n_iter, b.converged)
    # The starts did run as a batch: the starts not near the best keep the batch's fit (a trace of the start
    # alone), those near it were fitted again on their own.
    batch_only = [len(fit.trace) == 1 for fit in batched.fits]
    near_best = [fit.loglik >= batched.best.loglik - 1e-12 * max(abs(batched.best.loglik), 100) for fit in batched.fits]
    assert batch_only == [not near for near in near_best]
    if replicate in (1, 5):
        assert any(batch_only)


# --------------------------------------------------------------------------------------------------
# Failed starts, with a scripted family: start i's fit is known, so which ones the batch fails is built in.


@dataclass(frozen=True)
class _Value:
    value: np.ndarray | float


class _ScriptedFamily:
    """Starts 0, 1, 2, ...; a start's fit ends at the log-likelihood ``logliks[i]``, or fails (None)."""

    def __init__(self, logliks, batched: bool = True):
        self.logliks = logliks
        self.batched = batched
        self.calls = {"one": [], "batches": []}

    def random_starts(self, model_def, data, n_init, rng):
        return [_Value(float(i)) for i in range(n_init)]

    def fit(self, model_def, data, init, **options):
        i = int(init.value)
        self.calls["one"].append(i)
        if self.logliks[i] is None:
            raise DegenerateFitError(f"start {i} collapsed")
        return EMFit(_Value(float(i)), None, self.logliks[i], 3, True,
                     (EMIteration(0, init, 0.0, None), EMIteration(3, _Value(float(i)), self.logliks[i], None)))

    def restart_batches(self, model_def, data, options):
        if not self.batched:
            return None, 1

        def fit_batch(inits):
            self.calls["batches"].append(len(inits))
            index = np.array([int(i.value) for i in inits])
            values = np.array([np.nan if self.logliks[i] is None else self.logliks[i] for i in index])
            return BatchedEMFit(_Value(index.astype(float)), values, np.full(len(inits), 3), np.ones(len(inits), bool),
                                tuple("DegenerateFitError: collapsed" if np.isnan(v) else "" for v in values), values)

        return fit_batch, 100


SPEC = {"em": {"n_init": 5, "tol": 1e-8, "param_tol": 1e-6, "max_iter": 500}}


def test_a_start_the_batch_fails_is_counted_as_one_at_a_time():
    logliks = [-3.0, None, -1.0, -2.0, -1.0]
    family = _ScriptedFamily(logliks)
    outcome = rep.fit_em(family, None, None, SPEC, None)
    oracle = one_at_a_time(_ScriptedFamily(logliks, batched=False), None, None, SPEC, None)
    assert family.calls["batches"] == [5]
    # The failed start is run again on its own (its failure is fit's), and so are the two at the best.
    assert family.calls["one"] == [1, 2, 4]
    assert outcome.n_failed == oracle.n_failed == 1
    assert [fit.loglik for fit in outcome.fits] == [fit.loglik for fit in oracle.fits]
    assert outcome.best.params.value == oracle.best.params.value == 2.0


def test_every_start_failing_fails_the_replicate_with_a_count():
    family = _ScriptedFamily([None, None, None, None, None])
    with pytest.raises(RuntimeError, match=r"every EM start failed \(5 of 5\)"):
        rep.fit_em(family, None, None, SPEC, None)
