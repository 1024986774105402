"""Tables name a parameter's elements as its family declares them (ParameterInfo.label): a hidden Markov model's
transition entry reads "transition, state 1 -> state 2", never "transition[0, 1]"; a mixture without a template
keeps its ``mu[0]`` labels. Built from declared result groups, no fitting."""

from __future__ import annotations

import numpy as np
import xarray as xr

from emvsbayes.hmm.family import FAMILY as HMM
from emvsbayes.hmm.model import HiddenMarkovModel
from emvsbayes.report.params import elements
from emvsbayes.results import declare_parameters


def declared_groups(parameters, variables):
    groups = {"em": xr.Dataset({name: (info.dims, value) for name, (info, value) in
                                ((n, (parameters[n], v)) for n, v in variables.items())}),
              "posterior": xr.Dataset({name: (("chain", "draw", *parameters[name].dims), np.broadcast_to(value, (2, 3, *np.shape(value))))
                                       for name, value in variables.items()})}
    declare_parameters(groups, parameters, "test")
    return groups


def test_hmm_elements_are_named_by_state_from_one():
    model = HiddenMarkovModel(n_components=2, emission="poisson", initial="stationary")
    params = HMM.example()[1]
    groups = declared_groups(HMM.parameters(model), params.variables())
    for group in ("em", "posterior"):
        labels = [label for label, _ in elements(groups[group]["transition"])]
        assert labels == ["transition, state 1 -> state 1", "transition, state 1 -> state 2",
                          "transition, state 2 -> state 1", "transition, state 2 -> state 2"], labels
        assert [label for label, _ in elements(groups[group]["rate"])] == ["rate, state 1", "rate, state 2"]
    # the element each label names is the one read: row "state 1 -> state 2" is transition[0, 1]
    where = dict((label, w) for label, w in elements(groups["em"]["transition"]))["transition, state 1 -> state 2"]
    assert float(groups["em"]["transition"].isel(where)) == params.transition[0, 1]


def test_a_parameter_without_a_template_keeps_its_indexed_label():
    from emvsbayes.family import ParameterInfo

    parameters = {"mu": ParameterInfo(("component",), ("component",), "identity")}
    groups = declared_groups(parameters, {"mu": np.array([1.0, 2.0])})
    assert [label for label, _ in elements(groups["em"]["mu"])] == ["mu[0]", "mu[1]"]


def test_an_initial_probability_at_rounding_distance_from_zero_is_on_the_boundary():
    """EM's estimated initial distribution ends at a vertex to rounding (1e-128 on Old Faithful's series): the
    observed information there is singular, and the family must say so rather than report se 1e-64."""
    from emvsbayes.hmm.model import HMMParams

    model = HiddenMarkovModel(n_components=2, emission="gaussian", initial="estimated")
    params = HMMParams(np.array([1e-128, 1.0]), np.array([[0.06, 0.94], [0.5, 0.5]]), mu=np.array([2.0, 4.3]),
                       sigma=np.array([0.2, 0.4]))
    assert "singular" in HMM.information_reason(model, None, params)
    assert HMM.information_reason(model, None, HMMParams(
        np.array([0.3, 0.7]), params.transition, mu=params.mu, sigma=params.sigma)) == ""


def test_the_independence_note_says_alternation_when_the_chain_leaves_its_states():
    """Old Faithful's chain leaves the short state with probability 0.94 (lag-1 autocorrelation -0.55): the note must
    not call its states persistent runs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_hmm_family import _results_tree

    from emvsbayes.hmm.report import independence_note

    tree, _, _ = _results_tree(False)
    em = tree["em"].to_dataset()
    tree["em"] = em.assign(transition=(em["transition"].dims, np.array([[0.06, 0.94], [0.52, 0.48]])))
    note = independence_note(tree)
    assert "alternates" in note and "persistent states" not in note
    tree["em"] = em.assign(transition=(em["transition"].dims, np.array([[0.93, 0.07], [0.13, 0.87]])))
    assert "persistent states" in independence_note(tree)
