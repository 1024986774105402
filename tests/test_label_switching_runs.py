"""Label switching on real posteriors: chains in permuted modes are fixed by relabelling; genuinely
different modes (galaxies, K = 3) are reported as such and not "fixed"; every relabel method a spec may
name runs end to end."""

import re

import numpy as np
import pytest
import xarray as xr
from conftest import run_cli

from emvsbayes import api
from emvsbayes.data import load_dataset, simulate_gaussian_mixture
from emvsbayes.gaussian import bayes, em
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams
from emvsbayes.labels.groups import RELABEL_METHODS, label_switching_groups
from emvsbayes.sampling import SamplerSettings, sample_posterior
from emvsbayes.spec import SCHEMA

pytestmark = pytest.mark.slow


def test_permuted_chains_are_relabelled_to_rhat_one():
    # Three well-separated components (means 10 sds apart): each chain stays in the labelling it
    # starts in (a switch would cross ~ 50 units of log-density), and the four chains start in four
    # different labellings of the truth. So every draw's permutation is known, and the relabelling
    # is checked against it draw by draw: that is the code's part, which no sampler luck can pass.
    rng = np.random.default_rng(7)
    truth = GaussianParams.from_covariances([0.3, 0.4, 0.3], [[-10.0], [0.0], [10.0]], np.ones((3, 1, 1)))
    data = simulate_gaussian_mixture(150, truth.w, truth.mu, truth.full_covariances(), rng)
    model_def = GaussianMixtureModel(3, "full")
    perms = [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]]
    starts = bayes.initvals_from_params(model_def, [truth.permuted(p) for p in perms])
    tree = sample_posterior(bayes.build_model(model_def, data.x),
                            SamplerSettings("numpyro", chains=4, draws=500, tune=500), 3, starts).tree
    probs = bayes.membership_probabilities(model_def, data.x, bayes.posterior_draws(tree))
    posterior = tree["posterior"].to_dataset()[["w", "mu", "sigma"]]
    groups = label_switching_groups(posterior, probs=probs, reference=truth.variables())
    ls = groups["label_switching"]
    known = np.argsort(perms, axis=1)
    np.testing.assert_array_equal(groups["posterior_relabelled"]["permutation"].values,
                                  np.broadcast_to(known[:, None, :], (4, 500, 3)))
    mu_rows = [i for i, p in enumerate(ls["parameter"].values) if p.startswith("mu")]
    assert np.all(ls["rhat_before"].values[mu_rows] > 2.0)
    # With the labels right, what is left is R-hat's own noise: the largest of 9 split R-hats at bulk ESS
    # >= 2000 measured 1.004-1.008 (4 seeds, numpyro and PyMC's NUTS; 1.01 was within that noise,
    # which is why this bar is not 1.01).
    assert np.all(ls["rhat_after"].values <= 1.03)
    assert ls.attrs["label_switching"] == 1 and ls.attrs["distinct_modes"] == 0
    np.testing.assert_array_equal(ls["modal_perm"].values, known)
    relabelled = groups["posterior_relabelled"]["mu"].mean(("chain", "draw")).values
    np.testing.assert_allclose(relabelled, [-10, 0, 10], atol=0.5)  # 4 x posterior sd of a mean (~0.15)


def _draws_near(params: GaussianParams, n_obs: int, perm, n_draws: int, rng) -> dict[str, np.ndarray]:
    """Draws from the large-sample normal approximation of the posterior near one EM optimum, its
    components renamed by ``perm``: w ~ Dirichlet(n w + 1), mu ~ N(mu, sigma^2 / (n w)),
    log sigma ~ N(log sigma, 1 / (2 n w)) (the inverse Fisher information of each component's
    n w points)."""
    w, mu, sigma = params.w, params.mu.ravel(), np.sqrt(params.full_covariances().ravel())
    counts = n_obs * w
    draws = {"w": rng.dirichlet(counts + 1, size=n_draws),
             "mu": mu + sigma / np.sqrt(counts) * rng.normal(size=(n_draws, w.size)),
             "sigma": sigma * np.exp(rng.normal(size=(n_draws, w.size)) / np.sqrt(2 * counts))}
    return {name: value[:, perm] for name, value in draws.items()}


def test_galaxies_distinct_modes_are_reported_not_fixed():
    # Galaxies with K = 3 has genuinely different explanations: the best EM optimum (small components
    # on the groups near 10 and 33) and one with a wide component under two on the central group
    # (log-likelihood -212.1, the mode the issue saw a nutpie chain settle in). Whether a sampled chain
    # stays there depends on the sampler and the machine, so the situation is built, not sampled: two
    # chains drawn near each optimum (one of each pair with its labels permuted). Relabelling must
    # not "fix" that: it is not a permutation; the per-mode summary must keep the two apart.
    data = load_dataset("galaxies")
    x = np.asarray(data.x, dtype=float)
    model_def = GaussianMixtureModel(3, "full")

    def optimum(mu, sd, w):
        init = GaussianParams.from_covariances(w, np.array(mu)[:, None], (np.array(sd) ** 2)[:, None, None])
        return em.fit(model_def, x, init, tol=1e-10, max_iter=3000)

    best = optimum([9.7, 33.0, 21.4], [0.5, 1.0, 2.0], [0.1, 0.05, 0.85])
    other = optimum([19.4, 19.8, 22.9], [8.0, 0.7, 1.1], [0.27, 0.37, 0.36])
    assert best.loglik == pytest.approx(-203.482, abs=1e-3) and other.loglik == pytest.approx(-212.136, abs=1e-3)
    rng = np.random.default_rng(1990)
    chains = [_draws_near(best.params, len(x), [0, 1, 2], 500, rng), _draws_near(best.params, len(x), [2, 0, 1], 500, rng),
              _draws_near(other.params, len(x), [0, 1, 2], 500, rng), _draws_near(other.params, len(x), [1, 2, 0], 500, rng)]
    posterior = xr.Dataset({name: (("chain", "draw", "component"), np.stack([c[name] for c in chains]))
                            for name in ("w", "mu", "sigma")},
                           coords={"chain": np.arange(4), "draw": np.arange(500), "component": np.arange(3)})
    flat = {name: posterior[name].values.reshape(-1, 3) for name in ("w", "mu", "sigma")}
    probs = bayes.membership_probabilities(model_def, x, flat)
    groups = label_switching_groups(posterior, probs=probs, reference=best.params.variables(), interval_prob=0.89)
    ls, modes = groups["label_switching"], groups["posterior_modes"]
    assert ls.attrs["distinct_modes"] == 1
    np.testing.assert_array_equal(ls["chain_mode"].values, [0, 0, 1, 1])
    np.testing.assert_allclose(ls["mode_share"].values, [0.5, 0.5])
    assert np.max(ls["rhat_after"].values) > 1.1  # relabelling cannot merge different modes
    # Within each mode the draws are iid (ESS ~ 1000), so split R-hat exceeds 1 by ~1/250 at most.
    assert np.nanmax(modes["rhat"].values) < 1.01
    # Each mode's mean is its own optimum (in some labelling): the standard error of a mean of 1000 draws
    # is at most 1.74 / sqrt(1000) = 0.055 (the wide component's mean), so 0.25 is over four of them.
    parameters = list(modes["parameter"].values)
    for mode, fit in ((0, best), (1, other)):
        mu = modes["mean"].values[mode, [parameters.index(f"mu[{k}]") for k in range(3)]]
        np.testing.assert_allclose(np.sort(mu), np.sort(fit.params.mu.ravel()), atol=0.25)


# Every relabel method the spec validator accepts, read from the validator itself (its error lists them).
ACCEPTED_RELABEL = re.findall(r"'(\w+)'", SCHEMA["bayes"]["relabel"].check("?") or "")

SMALL_COINS_RUN = """
title = "lecture coins, relabel = {method}"
seed = 45
[data]
dataset = "coins_lecture"
[model]
family = "coins"
components = 2
weights = "equal"
[em]
init = [0.5, 0.9]
information = false
bootstrap = 0
[bayes]
chains = 2
draws = 100
tune = 100
relabel = "{method}"
"""


def _relabelled_run(out):
    tree = xr.open_datatree(out / "results.nc", engine="h5netcdf")
    return tree["label_switching"].attrs, tree


# "auto" reads the session's lecture_run: under pytest-xdist it runs in that run's group (tests/conftest.py)
@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.xdist_group("lecture_run")) if m == "auto" else m
                                    for m in ACCEPTED_RELABEL])
def test_every_accepted_relabel_method_runs_from_a_spec(method, tmp_path, request):
    # Issue 15: relabel = "ecr" passed validation and then crashed every run. A short coin run per method
    # (2 x 100 draws, the model compiled once for all) from its spec file, in this process as api.run does
    # (the command line's own path is the lecture run's and tests/test_cli.py's); "auto" is the default the
    # lecture spec already runs.
    assert set(ACCEPTED_RELABEL) == set(RELABEL_METHODS) and len(ACCEPTED_RELABEL) >= 6
    if method == "auto":
        out = request.getfixturevalue("lecture_run")
    else:
        spec = tmp_path / f"{method}.toml"
        spec.write_text(SMALL_COINS_RUN.format(method=method), encoding="utf-8")
        out = tmp_path / "out"
        api.run(spec, out=out)
    attrs, tree = _relabelled_run(out)
    assert attrs["method"] == ("stephens" if method == "auto" else method)
    assert attrs["labelling"] == tree["posterior_relabelled"].attrs["labelling"] != ""
    # Whatever the method, the relabelled posterior is read beside EM's answer: same order of the coins.
    em_theta = tree["em"]["theta"].values
    posterior_theta = tree["posterior_relabelled"]["theta"].mean(("chain", "draw")).values
    np.testing.assert_array_equal(np.argsort(posterior_theta), np.argsort(em_theta))
    assert "labelling taken from" in (out / "index.html").read_text(encoding="utf-8")


def test_ecr_runs_from_a_gaussian_spec(tmp_path):
    # The Gaussian runner passes ECR its pivot too: EM's allocation of 60 points in two groups 8 sds apart.
    rng = np.random.default_rng(15)
    x = rng.normal(np.repeat([-4.0, 4.0], 30), 1.0)
    (tmp_path / "two.csv").write_text("x\n" + "".join(f"{v:.6f}\n" for v in x), encoding="utf-8")
    spec = tmp_path / "ecr.toml"
    spec.write_text('[data]\nfile = "two.csv"\n[model]\nfamily = "gaussian"\ncomponents = 2\n'
                    '[em]\nn_init = 2\ninformation = false\nbootstrap = 0\n[bayes]\nchains = 2\ndraws = 100\ntune = 100\nrelabel = "ecr"\n',
                    encoding="utf-8")
    proc = run_cli("run", spec, "--out", tmp_path / "out", "--quiet")
    assert proc.returncode == 0, proc.stderr
    attrs, tree = _relabelled_run(tmp_path / "out")
    assert attrs["method"] == "ecr" and "EM answer's allocation" in attrs["labelling"]
    # Posterior sd of each mean is ~0.2; 0.5 is 2.5 of them, and a mislabelled draw would move it by 8.
    np.testing.assert_allclose(tree["posterior_relabelled"]["mu"].mean(("chain", "draw")).values,
                               tree["em"]["mu"].values, atol=0.5)
