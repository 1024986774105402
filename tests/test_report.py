"""The report from synthetic results trees: sections appear with their data, warnings say what to do,
user strings are escaped (in HTML and in matplotlib's SVG), the page stays small, and the index and
terminal card read the same trees."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr

from emvsbayes.report import figures, refresh_index, render_report, render_report_file, summary_card_text
from emvsbayes.report.markup import Raw, esc
from emvsbayes.report.sections import Context, data_section, summary_section
from emvsbayes.results import build_tree, write_results

XSS = "<script>window.__xss=1</script>"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def synthetic_tree(*, n_obs=60, features=("length", "width"), k=2, chains=4, draws=200, seed=0, title="Synthetic run",
                   obs_label="obs", label_switching=True, extras=True, rhat_bad=False, diverging=0,
                   converged=True, singular=False, pareto_bad=0, distinct_modes=False, reached_best=None,
                   degenerate_k=None) -> xr.DataTree:
    """A Gaussian results tree with the groups and names of ``shared/RESULTS.md``, made of seeded noise.

    ``features`` gives the data's column names (one name: a 1-D mixture with ``sigma``; more: ``cov``).
    ``extras`` adds the uncertainty and model-choice groups. ``reached_best`` records how many of the restarts
    ended at the best log-likelihood (with three asked for and the start budget spent); ``degenerate_k`` flags
    that K's model-choice fit as degenerate and gives it the lowest BIC, AIC and ICL.
    """
    rng = np.random.default_rng(seed)
    d = len(features)
    comp = np.arange(k)
    obs = [f"{obs_label}{i}" for i in range(n_obs)]
    truth = rng.integers(0, k, n_obs)
    mu = np.arange(k)[:, None] * 3.0 + np.zeros(d)
    x = mu[truth] + rng.normal(size=(n_obs, d))
    resp = np.clip(np.eye(k)[truth] * 0.9 + 0.1 / k, 0, 1)
    resp /= resp.sum(axis=1, keepdims=True)
    coords = {"component": comp, "feature": list(features), "feature_bis": list(features)}
    w = np.full(k, 1 / k)
    params = {"w": (("component",), w), "mu": (("component", "feature"), mu)}
    if d == 1:
        params = {"w": (("component",), w), "mu": (("component",), mu[:, 0]), "sigma": (("component",), np.ones(k))}
    else:
        params["cov"] = (("component", "feature", "feature_bis"), np.stack([np.eye(d)] * k))
    groups = {
        "data": xr.Dataset({"x": (("obs", "feature"), x), "true_component": ("obs", truth)},
                           coords={"obs": obs, "feature": list(features)},
                           attrs={"source": f"synthetic {XSS if title == XSS else ''}", "kind": "continuous"}),
        "em": xr.Dataset({**params, "loglik": -123.4, "resp": (("obs", "component"), resp)},
                         coords={**coords, "obs": obs}, attrs={"n_iter": 12, "converged": int(converged)}),
    }
    groups["em"] = groups["em"].drop_vars([c for c in ("feature", "feature_bis") if c not in groups["em"].dims])
    n_iter = 6
    groups["em_trace"] = xr.Dataset(
        {name: (("iteration", *dims), np.stack([np.asarray(v) * (1 + 0.1 * (n_iter - i) / n_iter) for i in range(n_iter)]))
         for name, (dims, v) in params.items()} | {"loglik": ("iteration", np.linspace(-150, -123.4, n_iter))},
        coords={"iteration": np.arange(n_iter)})
    n_restarts = 5
    groups["em_restarts"] = xr.Dataset(
        {name: (("restart", *dims), np.stack([np.asarray(v)] * n_restarts)) for name, (dims, v) in params.items()}
        | {"loglik": ("restart", [-123.4, -123.4, -130.0, -123.4, -130.0]), "n_iter": ("restart", [12, 9, 30, 11, 25]),
           "converged": ("restart", np.array([1, 1, 1, 1, 1], dtype=np.int8)),
           "init_loglik": ("restart", [-160.0, -150.0, -170.0, -155.0, -165.0])},
        coords={"restart": np.arange(n_restarts)}, attrs={"best_restart": 0})
    groups["em_optima"] = xr.Dataset(
        {"loglik": ("optimum", [-123.4, -130.0]), "count": ("optimum", [3, 2]), "representative": ("optimum", [0, 2]),
         "optimum_of_restart": ("restart", [0, 0, 1, 0, 1])}, coords={"optimum": [0, 1], "restart": np.arange(n_restarts)})

    def draws_like(value, dims):
        value = np.asarray(value, dtype=float)
        noise = 0.05 * rng.normal(size=(chains, draws, *value.shape))
        out = value + noise
        if rhat_bad:
            out = out + np.arange(chains).reshape(chains, 1, *([1] * value.ndim)) * 0.5
        return (("chain", "draw", *dims), out)

    sample_coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    posterior = xr.Dataset({name: draws_like(v, dims) for name, (dims, v) in params.items()},
                           coords={**sample_coords, **coords}, attrs={"sampler": "nutpie"})
    if d > 1:  # a covariance is symmetric in every draw
        posterior["cov"] = (posterior["cov"] + posterior["cov"].rename(feature="feature_bis", feature_bis="feature")) / 2
    groups["posterior"] = posterior
    div = np.zeros((chains, draws), dtype=np.int8)
    div.flat[:diverging] = 1
    groups["sample_stats"] = xr.Dataset({"diverging": (("chain", "draw"), div),
                                         "step_size": (("chain", "draw"), np.full((chains, draws), 0.5))}, coords=sample_coords)
    groups["posterior_membership"] = xr.Dataset(
        {"membership": (("obs", "component"), np.full((n_obs, k), 1 / k)), "membership_relabelled": (("obs", "component"), resp)},
        coords={"obs": obs, "component": comp})
    if label_switching:
        perms = np.tile(comp, (chains, draws, 1))
        perms[0, draws // 2:] = comp[::-1]
        relabelled = posterior.copy()
        relabelled["permutation"] = (("chain", "draw", "component"), perms)
        relabelled.attrs = {"method": "stephens", "n_changed": draws // 2}
        groups["posterior_relabelled"] = relabelled
        labels = [f"w[{c}]" for c in comp]
        groups["label_switching"] = xr.Dataset(
            {"modal_perm": (("chain", "component"), np.tile(comp, (chains, 1))),
             "modal_share": ("chain", [0.5] + [1.0] * (chains - 1)), "n_switches": ("chain", [1] + [0] * (chains - 1)),
             "chain_mode": ("chain", np.zeros(chains, dtype=int)), "mode_share": ("mode", [1.0]),
             "rhat_before": ("parameter", np.full(k, 1.2)), "rhat_after": ("parameter", np.full(k, 1.001)),
             "ess_before": ("parameter", np.full(k, 50.0)), "ess_after": ("parameter", np.full(k, 800.0))},
            coords={"chain": np.arange(chains), "component": comp, "mode": [0], "parameter": labels},
            attrs={"method": "stephens", "n_changed": draws // 2, "n_draws_total": chains * draws,
                   "label_switching": 1, "distinct_modes": int(distinct_modes)})
    if extras:
        info = xr.Dataset(coords={k_: v for k_, v in coords.items()})
        for name, (dims, v) in params.items():
            se = np.full(np.shape(v), np.nan if singular else 0.1)
            info[f"se_{name}"] = (dims, se)
            info[f"wald_lower_{name}"] = (dims, np.asarray(v) - 1.6 * se)
            info[f"wald_upper_{name}"] = (dims, np.asarray(v) + 1.6 * se)
        info.attrs = {"singular": int(singular), "reason": "a component is nearly empty" if singular else ""}
        groups["em_information"] = info.drop_vars([c for c in ("feature", "feature_bis") if c not in info.dims])
        n_rep = 50
        groups["em_bootstrap"] = xr.Dataset(
            {name: (("replicate", *dims), np.asarray(v) + 0.1 * rng.normal(size=(n_rep, *np.shape(v))))
             for name, (dims, v) in params.items()}, coords={"replicate": np.arange(n_rep)})
        ks = np.arange(1, 5)
        groups["model_choice"] = xr.Dataset(
            {"bic": ("K", [300.0, 250.0, 260.0, 270.0]), "aic": ("K", [290.0, 240.0, 245.0, 250.0]),
             "icl": ("K", [300.0, 255.0, 270.0, 290.0]), "elpd_loo": ("K", [-150.0, -120.0, -121.0, np.nan]),
             "elpd_loo_se": ("K", [5.0, 4.0, 4.2, np.nan]), "p_loo": ("K", [2.0, 5.0, 8.0, np.nan]),
             "n_pareto_k_bad": ("K", [0.0, 0.0, float(pareto_bad), np.nan]),
             "note": ("K", ["", "", "", f"ill-posed {XSS if title == XSS else ''}"])}, coords={"K": ks})
        if degenerate_k is not None:
            choice = groups["model_choice"]
            flagged = ks == degenerate_k
            choice["degenerate"] = ("K", flagged.astype(float))
            for name in ("bic", "aic", "icl"):
                choice[name] = choice[name].where(~flagged, 100.0)
            choice.attrs.update(min_component_points=3, degenerate_best_by_bic=int(degenerate_k), best_by_bic=2)
        groups["membership_agreement"] = xr.Dataset({"mean_abs_diff": 0.03, "ari_em_posterior": 0.97},
                                                    attrs={"entropy_em": 0.12})
    if reached_best is not None:
        facts = {"n_starts": n_restarts, "n_reached_best": reached_best, "reach_best": 3, "max_init": n_restarts,
                 "restart_budget_spent": int(reached_best < 3)}
        groups["em"].attrs.update(facts)
        groups["em_restarts"].attrs.update(facts)
    spec = {"title": title, "model": {"family": "gaussian", "components": k, "covariance": "full"},
            "bayes": {"variant": "symmetric"}, "report": {"interval_prob": 0.89}, "note": title}
    attrs = {"title": title, "spec_name": "synthetic", "spec": spec, "spec_path": f"/tmp/{title}.toml", "seed": seed,
             "seeds": {"em": 1, "sampler": 2}, "versions": {"numpy": np.__version__}, "machine": {"cores": 1},
             "timings": {"em": 0.1, "sampling": 1.0}, "command": f"emvsbayes run '{title}'", "created": "2026-01-01T00:00:00"}
    return build_tree(groups, attrs)


def figure_names(page: str) -> list[str]:
    return re.findall(r'<figure class="fig" data-fig="([^"]+)">', page)


@pytest.fixture(scope="module")
def full_page():
    return render_report(synthetic_tree())


def test_every_section_appears_with_its_data(full_page):
    for anchor in ("summary", "data", "em", "bayes", "comparison", "label-switching", "reproducibility"):
        assert f'<section id="{anchor}">' in full_page, anchor
    for text in ("Distinct local optima", "Every restart", "Wald 89%", "bootstrap 89%", "Choosing K",
                 "adjusted Rand index, EM against the posterior",
                 "R-hat and ESS before and after relabelling", "Per chain", "Spec as run"):
        assert text in full_page, text
    assert figure_names(full_page) == ["data", "em-loglik", "em-parameters", "em-restarts", "joint", "trace-before",
                                       "rank-before", "trace-after", "rank-after", "forest", "model-choice", "permutations"]
    assert full_page.count("<svg") == len(figure_names(full_page))


def test_sections_without_their_data_are_left_out():
    tree = synthetic_tree(label_switching=False, extras=False)
    for name in ("posterior", "sample_stats", "posterior_membership", "em_restarts", "em_optima"):
        del tree[name]
    page = render_report(tree)
    assert '<section id="bayes">' not in page and '<section id="label-switching">' not in page
    assert "Choosing K" not in page and "Wald" not in page and "Distinct local optima" not in page
    assert figure_names(page) == ["data", "em-loglik", "em-parameters", "forest"]


@pytest.mark.parametrize("features", [("x",), ("a", "b", "c"), tuple(f"f{i}" for i in range(6))])
def test_data_figure_by_dimension(features):
    page = data_section(Context(synthetic_tree(features=features, extras=False)))
    assert figure_names(page) == ["data"]
    if len(features) > 4:
        assert "principal component" in page


def test_user_strings_are_escaped_in_html_and_svg():
    tree = synthetic_tree(title=XSS, features=(XSS, "b"), obs_label=XSS, n_obs=12)
    page = render_report(tree)
    assert "<script" not in page.lower()
    assert esc(XSS) in page  # shown as text
    # matplotlib's SVG writer escapes text it draws (here a column name on an axis)
    assert "&lt;script&gt;" in page[page.index('data-fig="data"'):]


def test_matplotlib_svg_escapes_text():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set(xlabel=XSS, title="a & b <c>")
    ax.set_xticks([0, 1], [XSS, '"quoted"'])
    svg = figures.to_svg(fig)
    assert "<script" not in svg and "&lt;script&gt;" in svg and "a &amp; b &lt;c&gt;" in svg


def test_svg_ids_unique_across_figures(full_page):
    ids = re.findall(r'\sid="([^"]+)"', full_page)
    assert len(ids) == len(set(ids))
    referenced = set(re.findall(r'(?:href="#|url\(#)([^")]+)', full_page))
    assert referenced <= set(ids)


@pytest.mark.parametrize(("options", "phrase"), [
    ({"diverging": 7}, "7 divergent transitions"),
    ({"rhat_bad": True, "label_switching": False}, "R-hat above 1.01"),
    ({"converged": False}, "without converging"),
    ({"singular": True}, "no standard errors or Wald intervals"),
    ({"pareto_bad": 3}, "Pareto k > 0.7"),
    ({"distinct_modes": True}, "genuinely different modes"),
])
def test_warnings_say_what_to_do(options, phrase):
    tree = synthetic_tree(**options)
    page = summary_section(Context(tree))
    card = summary_card_text(tree)
    assert esc(phrase) in page and phrase in card
    assert "What to do" in page and "what to do" in card


def test_clean_run_has_no_warnings(full_page):
    assert "No warnings." in full_page


def test_summary_card_text_has_no_control_characters():
    tree = synthetic_tree(title="bad\x1b[31mred\x07 title\r", extras=False)
    card = summary_card_text(tree)
    assert not CONTROL.search(card.replace("\n", ""))
    assert "bad[31mred title" in card
    assert "estimates" in card and "diagnostics" in card and "label switching" in card


def test_large_data_page_stays_small(tmp_path):
    tree = synthetic_tree(n_obs=20000, features=("a", "b", "c"), k=3, draws=1000)
    path = render_report_file(tree, tmp_path / "index.html")
    assert path.stat().st_size < 5_000_000
    # at most MAX_POINTS points per scatter panel: count the marker uses in the data figure
    page = path.read_text(encoding="utf-8")
    data_fig = page[page.index('data-fig="data"'):page.index('data-fig="em-loglik"')]
    panels = 3  # lower triangle of a 3x3 pair plot
    assert data_fig.count("<use") <= panels * figures.MAX_POINTS + 100


def test_interval_figure_draws_at_most_a_screenful_of_one_parameter():
    # 12 columns, K = 2, full covariances: 2 x 78 distinct covariance entries; the figure drew all 156 rows (a
    # 200-column run's was thousands of inches high), the table lists them all
    tree = synthetic_tree(n_obs=200, features=tuple(f"f{i}" for i in range(12)), k=2, draws=100, extras=False)
    page = render_report(tree)
    start = page.index('data-fig="forest"')
    forest = page[start:page.index("</figure>", start)]
    assert "Drawn: the first 24 of 156 cov rows, in the table&#x27;s order; the table below lists every row." in forest
    assert forest.count("cov[") == 24 and forest.count("mu[") == 24  # the 24 means are all drawn
    assert page.count("<td>cov[") >= 156  # the comparison table (and the diagnostics) list every row


@pytest.mark.slow
def test_rendering_is_deterministic():
    tree = synthetic_tree(extras=False)
    assert render_report(tree) == render_report(tree)


@pytest.mark.slow
def test_refresh_index_lists_runs_and_skips_unreadable(tmp_path):
    for name, title in (("run-a", "First run"), ("<b>odd", XSS)):
        tree = synthetic_tree(title=title, extras=False)
        write_results(tree, tmp_path / name / "results.nc")
        render_report_file(tree, tmp_path / name / "index.html")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.nc").write_bytes(b"not a netcdf file")
    (tmp_path / "not-a-run").mkdir()
    path = refresh_index(tmp_path)
    page = path.read_text(encoding="utf-8")
    assert path == tmp_path / "index.html"
    assert 'href="run-a/index.html"' in page and "First run" in page
    assert "%3Cb%3Eodd/index.html" in page and "<b>odd" not in page and "<script" not in page.lower()
    assert "skipped" in page and "broken" in page and "not-a-run" not in page
    assert "gaussian model, K = 2" in page
    assert not list(tmp_path.glob(".index.html*"))  # no temporary file left behind


def _spherical(tree: xr.DataTree) -> xr.DataTree:
    """``tree`` with each posterior covariance draw s I: off-diagonal zeros, one variance per component."""
    posterior = tree["posterior"].to_dataset()
    s = 1.0 + 0.1 * np.random.default_rng(3).normal(size=posterior["w"].shape)
    eye = np.eye(posterior.sizes["feature"])
    posterior["cov"] = (posterior["cov"].dims, s[..., None, None] * eye)
    return tree.assign({"posterior": xr.DataTree(posterior)})


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the oracle's constant scalars
def test_diagnostics_are_arviz_summary_for_each_varying_scalar():
    # Oracle: az.summary's R-hat and ESS columns, label by label; constant scalars (a spherical
    # covariance's off-diagonal zeros) get no row, and a covariance only its upper triangle.
    import arviz as az

    from emvsbayes.report.summary import diagnostic_rows

    tree = _spherical(synthetic_tree(label_switching=False))
    posterior = tree["posterior"].to_dataset()
    expected = az.summary(posterior[["w", "mu", "cov"]], kind="diagnostics", round_to="none")
    rows = diagnostic_rows(tree)
    labels = [row.label for row in rows]
    assert labels == ["w[0]", "w[1]", "mu[0, length]", "mu[0, width]", "mu[1, length]", "mu[1, width]",
                      "cov[0, length, length]", "cov[0, width, width]", "cov[1, length, length]", "cov[1, width, width]"]
    for row in rows:
        reference = expected.loc[row.label]
        np.testing.assert_allclose([row.rhat, row.ess_bulk, row.ess_tail],
                                   [reference["r_hat"], reference["ess_bulk"], reference["ess_tail"]], rtol=1e-12)


def test_trace_shows_a_spherical_covariance_once_per_component():
    from emvsbayes.report.params import display_draws

    full = display_draws(synthetic_tree()["posterior"].to_dataset())
    assert full["variance"].dims == ("chain", "draw", "component", "feature")
    spherical_tree = _spherical(synthetic_tree())
    spherical = display_draws(spherical_tree["posterior"].to_dataset())
    assert spherical["variance"].dims == ("chain", "draw", "component")
    cov = spherical_tree["posterior"]["cov"]
    np.testing.assert_array_equal(spherical["variance"].values, cov.isel(feature=0, feature_bis=0).values)


def test_the_comparison_table_says_on_which_scale_the_wald_intervals_were_formed():
    from emvsbayes.report.sections import comparison_section

    tree = synthetic_tree()
    # written before the scales existed: the intervals were estimate +- z se
    assert "Wald intervals are estimate +- z se on the natural scale." in comparison_section(Context(tree))
    tree["em_information"].attrs.update(wald_scale_w="logit scale", wald_scale_mu="natural scale",
                                        wald_scale_cov="log scale for the variances, natural scale for the covariances")
    page = comparison_section(Context(tree))
    assert ("mapped back, so they stay inside its range: w on the logit scale; mu on the natural scale; cov on the log "
            "scale for the variances, natural scale for the covariances. EM se is on the natural scale") in page


@pytest.mark.parametrize("reached", [1, 2])
def test_few_starts_at_the_best_optimum_are_warned(reached):
    """Issue 15 item 3: the report says how many starts reached the best optimum and warns when only one did
    (or fewer than asked once the start budget is spent)."""
    card = summary_card_text(synthetic_tree(reached_best=reached), width=400)
    assert f"best of 5 restarts, reached by {reached}" in card
    assert f"Only {reached} of 5 EM starts reached the best log-likelihood (3 were asked for)" in card
    assert "Raise [em] max_init" in card


def test_enough_starts_at_the_best_optimum_give_no_warning():
    card = summary_card_text(synthetic_tree(reached_best=3), width=400)
    assert "reached by 3" in card
    assert "EM starts reached the best" not in card


def test_degenerate_model_choice_fit_is_marked_and_never_bold():
    """Issue 15 item 4: a K whose EM answer has a component on too few points is marked in the table, is not
    bolded although its BIC, AIC and ICL are lowest, the best is taken among the other rows, and the table's
    note and the warnings say why."""
    page = render_report(synthetic_tree(degenerate_k=4))
    table = page[page.index("Choosing K"):]
    table = table[:table.index("</table>")]
    rows = {re.match(r"<t[dh]>([^<]*)<", row).group(1): row for row in re.findall(r"<tr>(.*?)</tr>", table)}
    assert "<strong>" not in rows["4 (degenerate)"]
    assert rows["2"].count("<strong>") == 4  # BIC, AIC, ICL and elpd_loo: best among the non-degenerate rows
    assert "fewer than 3 expected points" in page and "never bolded" in page
    card = summary_card_text(synthetic_tree(degenerate_k=4), width=400)
    assert "K = 4 has a component that is no cluster: it holds fewer than 3 expected points" in card
    assert "it would be best by BIC (K = 4)" in card


def test_em_outside_the_posterior_interval_is_a_finding_not_a_failed_check():
    """Galaxies, K = 3: EM's small component has sd 0.92 where the posterior's 89% interval is [1.02, 7.76].
    That difference is what the comparison shows; the summary badges it "differs" and names the parameter,
    instead of a red CHECK that reads as a fault of the run."""
    from emvsbayes.report.params import ParamRow
    from emvsbayes.report.summary import _agreement, verdict_mark

    rows = [ParamRow("mu[0]", "mu", 9.7, post_eti=(9.4, 10.1)), ParamRow("sigma[1]", "sigma", 0.92, post_eti=(1.02, 7.76))]
    verdict = _agreement(rows, 0.89)
    assert verdict.ok is None and verdict_mark(verdict) == "differs"
    assert "inside the 89% posterior interval for 1 of 2 parameters (outside: sigma[1]); the two answers differ" in verdict.text
    agreeing = _agreement(rows[:1], 0.89)
    assert agreeing.ok is True and verdict_mark(agreeing) == "ok"


# --- readability: digits, panels, flat runs, labels (issue 16) ------------------------------------------


@pytest.mark.parametrize(("value", "text"), [(1.0103, "1.0103"), (1.01004, "1.01004"), (1.0099, "1.010"),
                                              (1.013, "1.013"), (1.0, "1.000"), (float("nan"), "–")])
def test_rhat_is_written_to_the_digits_that_show_why_it_is_marked(value, text):
    from emvsbayes.report.markup import fmt_rhat

    assert fmt_rhat(value) == text
    # whatever is marked (above 1.01) reads as above 1.01
    if value > 1.01:
        assert float(fmt_rhat(value)) > 1.01


def test_a_marked_rhat_cell_reads_above_the_limit():
    from emvsbayes.report.sections import _rhat_cell

    assert _rhat_cell(1.0101) == Raw('<span class="bad">1.0101</span>')
    assert _rhat_cell(1.0099) == "1.010"  # rounds to the limit but is not above it: not marked


def test_one_precision_per_column():
    from emvsbayes.report.markup import decimals_for, fixed

    places = decimals_for([0.5, 0.7968])
    assert [fixed(v, places) for v in (0.5, 0.7968)] == ["0.5000", "0.7968"]
    assert decimals_for([-9.93384, -9.79692], 6) == 5
    assert decimals_for([1696.1, 3880.5], 5) == 1
    assert decimals_for([float("nan")]) == 0


def test_too_many_panels_show_the_highest_rhat_and_say_which():
    from emvsbayes.report.sections import _worst_panels

    rng = np.random.default_rng(0)
    draws = rng.normal(size=(4, 100, 3, 14))
    draws[1:, :, 2, :5] += 3.0  # chains disagree on component 2's first five features: the highest R-hat
    ds = xr.Dataset({"mu": (("chain", "draw", "component", "feature"), draws)},
                    coords={"chain": range(4), "draw": range(100), "component": range(3),
                            "feature": [f"f{i}" for i in range(14)]})
    subset, note = _worst_panels(ds, limit=5)
    assert sorted(subset.data_vars) == sorted(f"mu[2, f{i}]" for i in range(5))
    assert "42 scalar parameters" in note and "highest R-hat" in note
    small, no_note = _worst_panels(ds.isel(component=[0], feature=[0, 1]), limit=5)
    assert no_note == "" and list(small.data_vars) == ["mu"]


def test_a_plotting_error_never_reaches_the_page():
    from emvsbayes.report.figures import arviz_figure

    def failing(tree, **kwargs):
        raise ValueError("plot.max_subplots (40) is exceeded: 42 subplots")

    svg = arviz_figure(failing, synthetic_tree(), what="The rank plot")
    assert "max_subplots" not in svg and "42 subplots" not in svg and "The rank plot" in svg


def test_a_run_that_started_at_its_optimum_is_not_drawn():
    from emvsbayes.report.figures import moved
    from emvsbayes.report.sections import Context, _loglik_paths

    assert not moved(np.full(3, -385.46070)) and not moved(np.array([-385.4607]))
    assert moved(np.array([-390.0, -385.4607]))
    tree = synthetic_tree()
    trace = tree["em_trace"].to_dataset()
    flat = trace.assign(loglik=("iteration", np.full(trace.sizes["iteration"], -100.0)))
    html = _loglik_paths(Context(tree), flat)
    assert "Nothing to draw" in html and "<svg" not in html
    html = _loglik_paths(Context(tree), trace)
    assert "<svg" in html


def test_hard_em_is_renamed_to_soft_ems_labels():
    from emvsbayes.report.sections import _matching_order

    soft = np.array([[-1.27, -1.21], [0.70, 0.67]])
    hard = soft[::-1] + 0.01  # the mirror labelling
    order = _matching_order(soft, hard)
    np.testing.assert_array_equal(order, [1, 0])
    np.testing.assert_allclose(hard[order], soft + 0.01)


def test_spherical_covariance_rows_are_one_per_component():
    from emvsbayes.report.params import parameter_rows
    from emvsbayes.report.sections import _distinct_rows

    tree = _spherical(synthetic_tree(features=("a", "b", "c"), label_switching=False, extras=False))
    em = tree["em"].to_dataset()
    em["cov"] = (em["cov"].dims, np.stack([np.eye(3) * s for s in (1.5, 2.5)]))
    tree = tree.assign({"em": xr.DataTree(em)})
    rows, left_out = _distinct_rows(parameter_rows(tree))
    cov_rows = [r.label for r in rows if r.name == "cov"]
    assert cov_rows == ["variance[0] (every feature)", "variance[1] (every feature)"]
    assert left_out == 2 * 6 - 2  # of 6 upper-triangle entries per component: 3 zeros, 2 repeats


@pytest.mark.slow
def test_the_degenerate_k_argument_is_in_the_page():
    # The heroes' numbers: 69 rows x 12 features, K = 30 full covariances (2729 free parameters) degenerate.
    from emvsbayes.report.sections import _free_parameters

    assert _free_parameters(30, 12, "full") == 2729 and _free_parameters(3, 12, "spherical") == 41
    tree = synthetic_tree(degenerate_k=4, features=("a", "b", "c"))
    choice = tree["model_choice"].to_dataset()
    choice["loglik"] = ("K", [-150.0, -120.0, -118.0, 900.0])
    choice["n_params"] = ("K", [float(_free_parameters(k, 3, "full")) for k in range(1, 5)])
    choice.attrs.update(n_obs=10, n_features=3, covariance="full", degenerate_best_by_aic=4)
    page = render_report(tree.assign({"model_choice": xr.DataTree(choice)}))
    assert "Why K = 4 with full covariances is not an answer" in page
    assert "10 rows x 3 features = 30 numbers" in page and "39 free parameters, 1.3 times as many" in page
    assert "plus infinity" in page and "never bolded" in page
    # without a degenerate K there is nothing to argue
    assert "is not an answer" not in render_report(synthetic_tree())


@pytest.mark.slow
def test_choosing_k_shows_the_lrt_and_the_sparse_mixture():
    """The bootstrap LRT's statistic and p-value are columns of Choosing K with their caveat (the boundary,
    hence the bootstrap; the smallest p is 1 / (B + 1)); the sparse mixture's P(K+ = k) is a figure and a
    table with what it assumes; a family that cannot fit one says why instead."""
    from emvsbayes.comparison import lrt_columns, sparse_group
    from emvsbayes.uncertainty.lrt import BootstrapLRT

    tree = synthetic_tree()
    choice = tree["model_choice"].to_dataset()
    k0 = int(choice["K"].values[0])
    test = BootstrapLRT(n_components=k0, statistic=12.5, replicates=np.array([1.0, 2.0, 30.0, 0.5]),
                        p_value=0.4, n_failed=0, n_search_failed=1)
    tree["model_choice"] = xr.DataTree(lrt_columns(choice, [test], 4))
    n_occupied = np.array([[2, 2, 3, 2, 2, 3, 2, 2], [2, 3, 2, 2, 2, 2, 3, 2]])
    tree["sparse_mixture"] = xr.DataTree(sparse_group(n_occupied, 5, {"k_max": 5, "concentration": 0.01,
                                                                      "sampler": "numpyro", "n_divergent": 0}))
    page = render_report(tree)
    section = page[page.index("<h3>Choosing K"):]
    assert "bootstrap p, K against K+1" in section and "12.5" in section and "0.4" in section
    assert "regularity conditions fail" in section and "smallest p possible is 0.2" in section
    assert "search ended below the K optimum" in section
    assert "How many clusters: an overfitted (sparse) mixture" in section
    assert 'data-fig="sparse-mixture"' in page and "Dirichlet(0.01, ..., 0.01)" in section
    assert "<td>0.75</td>" in section  # P(K+ = 2) = 12 / 16
    tree["sparse_mixture"] = xr.DataTree(xr.Dataset(attrs={"k_max": 5, "concentration": 0.01,
                                                           "skipped": "not for a hidden Markov model"}))
    page = render_report(tree)
    assert "Not fitted: not for a hidden Markov model." in page and 'data-fig="sparse-mixture"' not in page


def test_each_optimum_names_the_restart_whose_component_order_it_shows():
    # An optimum groups restarts up to renaming; its parameters are one restart's, in that restart's component
    # order, so the row must say which restart (the optima of synthetic_tree have representatives 0 and 2).
    tree = synthetic_tree()
    restarts = tree["em_restarts"].to_dataset()
    restarts["w"] = restarts["w"] * 0 + [[0.3, 0.7], [0.7, 0.3], [0.5, 0.5], [0.3, 0.7], [0.5, 0.5]]
    tree["em_restarts"] = xr.DataTree(restarts)
    page = render_report(tree)
    section = page[page.index("Distinct local optima"):]
    section = section[:section.index("</table>")]
    assert "restart 0: " in section and "restart 2: " in section
    assert "restart 0: w = 0.3000, 0.7000" in section and "component order. " in section


def test_refresh_index_uses_the_results_it_is_given(tmp_path, monkeypatch):
    # A run into reports/ refreshes the index with its own results already in memory: only the other
    # folders' files are read (issue 21 item 2: reading a run's results.nc again cost ~0.7 s).
    import emvsbayes.report.index as index_module

    # The index reads the results files and only looks whether a folder has a page (for its link): one page,
    # rendered once (3.5 s of CPU a page), stands in both folders.
    trees = {}
    for name, title in (("run-a", "First run"), ("run-b", "Second run")):
        trees[name] = synthetic_tree(title=title, extras=False)
        write_results(trees[name], tmp_path / name / "results.nc")
    page_text = render_report_file(trees["run-a"], tmp_path / "run-a" / "index.html").read_text(encoding="utf-8")
    (tmp_path / "run-b" / "index.html").write_text(page_text, encoding="utf-8")
    expected = refresh_index(tmp_path).read_text(encoding="utf-8")
    read = []
    real_read = index_module.read_results
    monkeypatch.setattr(index_module, "read_results", lambda path: read.append(path.parent.name) or real_read(path))
    known = index_module.read_results(tmp_path / "run-b" / "results.nc")
    read.clear()
    page = refresh_index(tmp_path, known={"run-b": known}).read_text(encoding="utf-8")
    assert read == ["run-a"]
    assert page == expected


def test_a_run_without_posterior_or_intervals_says_so_beside_em_alone():
    # [bayes] enabled = false and no standard errors or bootstrap (a [data] store run): the table and the
    # figure show EM's estimates alone and must not describe posterior columns or interval bars that are not there.
    tree = synthetic_tree(label_switching=False, extras=False)
    for name in ("posterior", "sample_stats", "posterior_membership"):
        del tree[name]
    page = render_report(tree)
    assert "No posterior was sampled in this run" in page and "this run computed no intervals" in page
    assert "Posterior columns summarise" not in page and "bars equal-tailed intervals" not in page


@pytest.mark.parametrize(("n_div", "n_draws", "shown"), [(100, 100, "(100% of draws)"), (52, 100, "(52% of draws)"),
                                                         (3, 100, "(3% of draws)"), (2, 4000, "(0.05% of draws)")])
def test_divergences_are_a_plain_percent(n_div, n_draws, shown):
    """".1g" wrote 100 % of the draws as "1e+02%" and 52 % as "5e+01%"."""
    from emvsbayes.report.summary import _divergence_finding

    assert shown in _divergence_finding(n_div, n_draws).problem


def test_interval_probabilities_are_labelled_as_given():
    """Whole percents called a 0.975 interval "98%" and a 0.895 one "90%" (round(prob * 100))."""
    from emvsbayes.family import percent

    assert [percent(p) for p in (0.89, 0.9, 0.975, 0.895, 0.5, 0.999, 0.01)] == [
        "89%", "90%", "97.5%", "89.5%", "50%", "99.9%", "1%"]
