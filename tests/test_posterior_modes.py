"""A posterior whose chains sit in different modes is summarised per mode (``posterior_modes``), the
report's parameter table shows one mode, and the diagnostics check passes within modes as a finding.

Every posterior here is built on purpose (chains drawn around chosen points), not sampled, so which
chain sits in which mode is fixed by construction and the tests check the code, not a sampler's luck.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from emvsbayes.labels.groups import label_switching_groups
from emvsbayes.report.params import parameter_rows
from emvsbayes.report.sections import Context, comparison_section, label_switching_section
from emvsbayes.report.summary import build_summary, summary_card_text
from emvsbayes.results import build_tree

#: Two well-separated answers of a 2-component 1-D mixture (sd of every draw: 0.05 around them).
MODE_A = {"w": np.array([0.4, 0.6]), "mu": np.array([0.0, 5.0]), "sigma": np.array([1.0, 1.0])}
MODE_B = {"w": np.array([0.4, 0.6]), "mu": np.array([0.0, 9.0]), "sigma": np.array([1.0, 2.0])}
SD = 0.05


def _chain(centre: dict, perm, n_draws: int, rng) -> dict:
    # iid draws around ``centre``, its components renamed by ``perm`` (label switching between chains)
    out = {}
    for name, value in centre.items():
        draws = value[None, :] + SD * rng.normal(size=(n_draws, value.size))
        out[name] = draws[:, perm]
    out["w"] = out["w"] / out["w"].sum(axis=1, keepdims=True)
    return out


def built_posterior(centres, perms, n_draws=500, seed=0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    chains = [_chain(c, p, n_draws, rng) for c, p in zip(centres, perms)]
    return xr.Dataset({name: (("chain", "draw", "component"), np.stack([c[name] for c in chains]))
                       for name in MODE_A},
                      coords={"chain": np.arange(len(chains)), "draw": np.arange(n_draws), "component": [0, 1]})


def _groups(posterior, interval_prob=0.89):
    return label_switching_groups(posterior, probs=None, reference=MODE_A, method="pivot", interval_prob=interval_prob)


def test_modes_are_summarised_apart_not_merged():
    # Chains 0 and 1 in mode A (chain 1 with the labels swapped), chains 2 and 3 in mode B.
    posterior = built_posterior([MODE_A, MODE_A, MODE_B, MODE_B], [[0, 1], [1, 0], [0, 1], [1, 0]])
    groups = _groups(posterior)
    ls, modes = groups["label_switching"], groups["posterior_modes"]
    assert ls.attrs["distinct_modes"] == 1
    assert np.max(ls["rhat_after"].values) > 1.1  # relabelling cannot merge different modes
    np.testing.assert_array_equal(modes["chain_mode"].values, [0, 0, 1, 1])
    np.testing.assert_allclose(modes["share"].values, [0.5, 0.5])
    np.testing.assert_array_equal(modes["n_chains"].values, [2, 2])
    assert modes.attrs["n_modes"] == 2 and modes.attrs["main_mode"] == 0
    parameters = list(modes["parameter"].values)
    assert parameters == list(ls["parameter"].values)
    expected = {0: MODE_A, 1: MODE_B}
    for mode, centre in expected.items():
        for name, value in centre.items():
            rows = [parameters.index(f"{name}[{k}]") for k in range(2)]
            # 1000 iid draws with sd 0.05: the mean's standard error is 0.0016; 0.01 is six of them.
            np.testing.assert_allclose(modes["mean"].values[mode, rows], value, atol=0.01)
            if name == "w":
                continue  # renormalised draws: their sd is not 0.05
            # the 89% interval of N(value, 0.05) is value -+ 0.080
            np.testing.assert_allclose(modes["lower"].values[mode, rows], value - 0.080, atol=0.01)
            np.testing.assert_allclose(modes["upper"].values[mode, rows], value + 0.080, atol=0.01)
    # iid draws: split R-hat over 4 half-chains of 250 exceeds 1 by ~1/250 at most; ESS is about 1000.
    assert np.nanmax(modes["rhat"].values) < 1.01
    assert np.nanmin(modes["ess_bulk"].values) > 700


def test_a_mode_of_one_chain_gets_its_split_rhat():
    posterior = built_posterior([MODE_A, MODE_A, MODE_A, MODE_B], [[0, 1], [1, 0], [0, 1], [0, 1]])
    modes = _groups(posterior)["posterior_modes"]
    np.testing.assert_array_equal(modes["chain_mode"].values, [0, 0, 0, 1])
    np.testing.assert_allclose(modes["share"].values, [0.75, 0.25])
    assert np.all(np.isfinite(modes["rhat"].values[1]))  # ArviZ gives NaN for one chain; its halves are used
    assert np.nanmax(modes["rhat"].values) < 1.01


def _tree(posterior, diverging=0, interval_prob=0.89):
    groups = _groups(posterior, interval_prob)
    em = xr.Dataset({**{name: ("component", value) for name, value in MODE_A.items()}, "loglik": -100.0},
                    coords={"component": [0, 1]}, attrs={"n_iter": 10, "converged": 1})
    stats = xr.Dataset({"diverging": (("chain", "draw"), np.zeros(posterior["mu"].shape[:2], dtype=bool))})
    stats["diverging"].values[0, :diverging] = True
    return build_tree({"em": em, "posterior": posterior, "sample_stats": stats, **groups},
                      {"title": "built modes", "spec": {"report": {"interval_prob": interval_prob}}})


def test_summary_reports_modes_as_a_finding_when_checks_pass_within_them():
    tree = _tree(built_posterior([MODE_A, MODE_B, MODE_A, MODE_B], [[0, 1], [1, 0], [1, 0], [0, 1]]))
    summary = build_summary(tree)
    verdicts = {v.topic: v for v in summary.verdicts}
    assert verdicts["diagnostics"].text.startswith("multimodal: 2 modes, checks pass within each mode")
    assert verdicts["diagnostics"].ok is True and verdicts["diagnostics"].mark == "modes"
    assert verdicts["label switching"].ok is None and "summarised per mode" in verdicts["label switching"].text
    assert any("2 distinct posterior modes" in w.problem for w in summary.warnings)
    assert "CHECK" not in summary_card_text(tree)
    # The parameter table summarises the main mode only: EM (mode A) inside every interval.
    rows = {r.label: r for r in parameter_rows(tree)}
    assert abs(rows["mu[1]"].post_mean - 5.0) < 0.01 and rows["mu[1]"].post_eti[1] < 5.1
    assert verdicts["estimates"].ok is True and "(posterior mode 0, the one most chains found)" in verdicts["estimates"].text
    ctx = Context(tree)
    page = label_switching_section(ctx)
    assert "Modes, each summarised apart (2)" in page and "chain 0, 2" in page and "chain 1, 3" in page
    assert "summarise mode 0 only" in comparison_section(ctx)


def test_summary_fails_when_a_mode_itself_has_not_converged():
    # Chain 2 drifts inside mode A: within that mode its first and second half disagree.
    posterior = built_posterior([MODE_A, MODE_B, MODE_A, MODE_B], [[0, 1], [0, 1], [0, 1], [0, 1]])
    posterior["mu"].values[2, :, 1] += np.linspace(-0.3, 0.3, posterior.sizes["draw"])
    verdict = {v.topic: v for v in build_summary(_tree(posterior)).verdicts}["diagnostics"]
    assert verdict.ok is False and "R-hat within modes" in verdict.text


def test_divergences_fail_the_multimodal_check():
    tree = _tree(built_posterior([MODE_A, MODE_B, MODE_A, MODE_B], [[0, 1]] * 4), diverging=3)
    verdict = {v.topic: v for v in build_summary(tree).verdicts}["diagnostics"]
    assert verdict.ok is False and "divergences" in verdict.text


def test_strict_checks_read_rhat_within_modes():
    from emvsbayes.pipeline import sampler_checks

    tree = _tree(built_posterior([MODE_A, MODE_B, MODE_A, MODE_B], [[0, 1]] * 4))
    assert np.max(tree["label_switching"]["rhat_after"].values) > 1.1
    checks = sampler_checks(tree)
    assert checks["failed"] == [] and checks["n_modes"] == 2 and checks["max_rhat"] < 1.01
    drifting = built_posterior([MODE_A, MODE_B, MODE_A, MODE_B], [[0, 1]] * 4)
    drifting["mu"].values[2, :, 1] += np.linspace(-0.3, 0.3, drifting.sizes["draw"])
    assert sampler_checks(_tree(drifting))["failed"][0].endswith("(within each of 2 modes)")


def test_constant_elements_have_no_rhat_and_no_warning():
    # Like the zeros off a spherical covariance's diagonal: a variable whose second element is constant
    # gets NaN R-hat there (there is none) and no RuntimeWarning per element (heroes printed dozens).
    import warnings

    posterior = built_posterior([MODE_A, MODE_B, MODE_A, MODE_B], [[0, 1]] * 4)
    scale = np.zeros(posterior["mu"].shape + (2,))
    scale[..., 0] = 1 + SD * np.random.default_rng(3).normal(size=posterior["mu"].shape)
    posterior["scale"] = (("chain", "draw", "component", "element"), scale)
    reference = {**MODE_A, "scale": np.array([[1.0, 0.0], [1.0, 0.0]])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        groups = label_switching_groups(posterior, probs=None, reference=reference, method="pivot")
    modes = groups["posterior_modes"]
    parameters = list(modes["parameter"].values)
    constant = [parameters.index("scale[0,1]"), parameters.index("scale[1,1]")]
    assert np.all(np.isnan(modes["rhat"].values[:, constant]))
    assert np.all(np.isfinite(np.delete(modes["rhat"].values, constant, axis=1)))


def test_chains_of_one_mode_are_put_in_one_labelling():
    # The relabelling matches every draw to EM's answer; for another mode that match is only the nearest
    # and may differ between its chains. Here chains 2 and 3 (mode 1) carry mode B in opposite labellings.
    from emvsbayes.labels.groups import posterior_modes_group

    relabelled = built_posterior([MODE_A, MODE_A, MODE_B, MODE_B], [[0, 1], [0, 1], [0, 1], [1, 0]])
    modes = posterior_modes_group(relabelled, np.array([0, 0, 1, 1]), ["w", "mu", "sigma"], 0.89)
    parameters = list(modes["parameter"].values)
    mu = modes["mean"].values[1, [parameters.index("mu[0]"), parameters.index("mu[1]")]]
    np.testing.assert_allclose(mu, MODE_B["mu"], atol=0.01)  # in chain 2's labelling (se 0.0016)
    assert np.nanmax(modes["rhat"].values) < 1.01
