"""Shared fixtures. Tests run real PyMC sampling; the compile caches (PyTensor's, JAX's, emvsbayes's
exported samplers) are private to the checkout (bin/test sets PYTENSOR_FLAGS, JAX_COMPILATION_CACHE_DIR
and EMVSBAYES_PROGRAM_CACHE_DIR) and warm after the first test that compiles a model."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PYTENSOR_FLAGS", f"base_compiledir={ROOT / '.cache' / 'pytensor'}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
os.environ.setdefault("EMVSBAYES_PROGRAM_CACHE_DIR", str(ROOT / ".cache" / "programs"))
# Runs draw their pages in their own process: the suite's two pytest-xdist workers already keep both cores
# busy, where a page worker (emvsbayes/report/workers.py) would only add its imports to every run's CPU.
# tests/test_page_workers.py runs with the workers on, as a user's run does, and checks they draw the same page.
os.environ.setdefault("EMVSBAYES_PAGE_WORKERS", "0")


def _user_env() -> dict:
    """The environment a user's shell gives: warnings as they come (no PYTHONWARNINGS from the test runner),
    so a test sees every warning and traceback line a user would see."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return env


#: Where tests run as root (containers, CI), a permission test runs the command without root's override of
#: file permissions, as any other user is refused (util-linux's setpriv; it must be there, never skipped).
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def run_cli(*args, cwd=None, timeout=600, env=None, unprivileged=False):
    """Run the installed command line as a user would; returns the CompletedProcess. ``env`` adds variables;
    ``unprivileged`` drops root's override of file permissions (:data:`UNPRIVILEGED`)."""
    prefix = UNPRIVILEGED if unprivileged else []
    return subprocess.run([*prefix, sys.executable, "-m", "emvsbayes", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env={**_user_env(), **(env or {})})


@pytest.fixture(scope="session")
def lecture_run(tmp_path_factory):
    """The lecture spec run once end to end through the CLI; tests read its outputs."""
    out = tmp_path_factory.mktemp("lecture")
    proc = run_cli("run", ROOT / "models" / "lecture_coins.toml", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


#: The PyTensor mode of a test's own evaluations of a PyMC graph (an oracle evaluated a few or a few hundred
#: times): each op's Python implementation, no compilation. PyTensor's default mode compiles every graph with
#: numba: 5-45 s per graph on a 2-core machine with a cold cache, which made such tests the suite's largest cost
#: on a fresh clone (tests/test_gaussian_bayes.py's structures: 93 s cold, 24 s in this mode). The graph is the
#: one emvsbayes builds; only how it is evaluated changes, and every such test compares its values with an
#: independent oracle at a stated tolerance.
ORACLE_MODE = "FAST_COMPILE"


#: The quick form of a bundled spec: the same structure (data, family, K, groups, ladder rungs, report) with 2
#: chains of 50 draws after 50 tuning steps, at most 3 EM starts, 4 bootstrap replicates, no model choice, and
#: a short uncertainty ladder (QUICK_LADDER).
QUICK = {"draws": 50, "tune": 50, "chains": 2}
#: the ladder's rungs as the spec names them, with few ADVI steps, approximation draws and Bayesian-bootstrap
#: refits (the rungs, groups and page sections are the same; the full-length ladder is tested in
#: tests/test_ladder_*.py)
QUICK_LADDER = {"vi_iter": 200, "draws": 100, "bootstrap": 4}
#: the master seed of every quick run
QUICK_SEED = 2024


def quick_raw(name: str) -> dict:
    """The bundled spec ``name`` as parsed TOML, shrunk to a quick run."""
    raw = tomllib.loads((ROOT / "models" / f"{name}.toml").read_text(encoding="utf-8"))
    raw.setdefault("bayes", {}).update(QUICK)
    raw.setdefault("em", {})["bootstrap"] = 4
    raw["em"]["n_init"] = min(raw["em"].get("n_init", 1), 3)
    if raw["model"]["family"] == "gaussian":  # the restart rule's budget, so at most 3 starts
        raw["em"].update(max_init=raw["em"]["n_init"], reach_best=1)
    raw.pop("model_choice", None)
    if "ladder" in raw:
        raw["ladder"].update(QUICK_LADDER)
    return raw


def quick_spec(name: str) -> dict:
    from emvsbayes.spec import validate

    spec = validate(quick_raw(name), source=name)
    spec["name"], spec["path"] = name, str(ROOT / "models" / f"{name}.toml")
    return spec


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """``name`` -> the run's outcome (``RunOutcome``: the results tree, the page's path) of the bundled spec
    ``name`` in its quick form at seed ``QUICK_SEED``, page written; each spec is run at most once per session.
    Shared so a spec is not sampled again for each question: tests/test_repeatability.py runs it a second time
    and compares bit for bit, tests/test_browser_bundled.py loads its page in Chromium."""
    made = {}

    def get(name: str):
        if name not in made:
            from emvsbayes.pipeline import run_spec

            made[name] = run_spec(quick_spec(name), tmp_path_factory.mktemp(f"quick-{name}"), seed=QUICK_SEED)
        return made[name]

    return get


#: Tests marked slow here, by node id, at collection: parametrised cases over 5 s of CPU on a 2-core machine
#: whose parameters are stacked (so a pytest.param cannot mark one combination), and below them every other
#: test measured at 3 s or more of its own CPU in a `-m "not slow"` run (2026-12-03, per-test CPU of the
#: worker process and its children; the figure after each): the edit-test loop keeps the tests that take
#: under 3 s, CI runs them all.
SLOW_CASES = {
    "tests/test_hmm_family.py::test_objective_never_falls[soft-stationary-gaussian]",
    "tests/test_hmm_family.py::test_objective_never_falls[soft-stationary-poisson]",
    # the registry's parametrisation (a module fixture's params): the HMM's symbolic Hessian is the long one
    "tests/test_family_contract.py::test_hessian_standard_errors_match_finite_differences[hmm]",
    "tests/test_family_contract.py::test_symbolic_log_likelihood_equals_the_numpy_one[hmm]",
    "tests/test_report.py::test_refresh_index_uses_the_results_it_is_given",  # 10.1 s
    "tests/test_browser.py::test_named_rows_are_named_on_the_projection_and_rank_p_values_sit_clear",  # 6.0 s
    "tests/test_report.py::test_large_data_page_stays_small",  # 5.1 s
    "tests/test_report.py::test_degenerate_model_choice_fit_is_marked_and_never_bold",  # 4.8 s
    "tests/test_family_contract.py::test_simulate_then_fit_recovers_the_truth[hmm]",  # 4.6 s
    "tests/test_sampling_programs.py::test_programs_run_numpyros_own_steps",  # 4.5 s
    "tests/test_browser.py::test_script_in_user_strings_shows_as_text_and_never_runs",  # 4.4 s
    "tests/test_report.py::test_every_section_appears_with_its_data",  # 4.4 s
    "tests/test_api.py::test_report_writes_the_page_and_never_over_a_foreign_file",  # 4.2 s
    "tests/test_sampling_programs.py::test_chains_vectorised_on_one_device_match_one_device_each",  # 4.2 s
    "tests/test_gaussian_bayes.py::test_recovers_2d_full_truth",  # 4.1 s
    "tests/test_sampling_programs.py::test_unreadable_store_is_rebuilt",  # 4.1 s
    "tests/test_report_parameters.py::test_a_declared_parameter_and_a_matrix_reach_the_parameter_table",  # 4.0 s
    "tests/test_browser.py::test_synthetic_gaussian_report_in_browser[features2]",  # 4.0 s
    "tests/test_api.py::test_results_are_the_results_file",  # 4.0 s
    "tests/test_report_parameters.py::test_a_family_without_theta_or_mu_renders_its_restarts",  # 3.9 s
    "tests/test_results_roundtrip.py::test_gaussian_groups_roundtrip",  # 3.9 s
    "tests/test_poisson_family.py::test_em_reaches_the_maximum_found_by_direct_optimisation[4]",  # 3.8 s
    "tests/test_bad_inputs.py::test_bidi_and_control_characters_are_neutralised_in_page_and_terminal",  # 3.8 s
    "tests/test_report.py::test_user_strings_are_escaped_in_html_and_svg",  # 3.7 s
    "tests/test_hmm_family.py::test_symbolic_hessian_matches_finite_differences_of_the_numpy_loglik",  # 3.7 s
    "tests/test_map_em_families.py::test_poisson_hmm_map_em_equals_the_optimiser_of_the_pymc_log_posterior",  # 3.7 s
    "tests/test_bad_inputs.py::test_messages_point_the_right_way[semicolon_separated_is_read]",  # 3.6 s
    "tests/test_browser.py::test_synthetic_gaussian_report_in_browser[features0]",  # 3.6 s
    "tests/test_report.py::test_each_optimum_names_the_restart_whose_component_order_it_shows",  # 3.5 s
    "tests/test_browser.py::test_synthetic_gaussian_report_in_browser[features1]",  # 3.5 s
    "tests/test_coins_exact.py::test_estimated_weights_against_quadrature",  # 3.5 s
    "tests/test_hmm_family.py::test_pymc_logp_is_forward_loglik_plus_log_prior[False-stationary-gaussian]",  # 3.3 s
    "tests/test_sampling_programs.py::test_stored_programs_give_the_same_draws_and_need_no_pymc",  # 3.2 s
    "tests/test_hmm_family.py::test_pymc_logp_is_forward_loglik_plus_log_prior[True-stationary-poisson]",  # 3.1 s
    "tests/test_em_robustness.py::test_em_is_finite_and_monotone_or_says_degenerate",  # 3.1 s
    "tests/test_api.py::test_dataframe_columns_rows_and_standardizing_are_kept",  # 3.1 s
    # measured 2026-12-06 (nineteenth session, the not-slow loop at 197-217 s): each over 5 s of wall time there
    "tests/test_study.py::test_report_re_renders_a_study_page_from_its_study_file",  # 5.7 s
    "tests/test_information_programs.py::test_the_hidden_markov_models_program_equals_its_pytensor_scan[poisson]",  # 5.6 s
    "tests/test_information_programs.py::test_the_hidden_markov_models_program_equals_its_pytensor_scan[gaussian]",  # 5.4 s
    "tests/test_ladder_vi.py::test_pareto_k_flags_a_q_locked_onto_one_labelling",  # 5.4 s
    "tests/test_gaussian_bayes.py::test_posterior_names_loglik_and_predictive[fit_2d]",  # 5.1 s
}


#: Fixtures that cost over 5 s of CPU to make on a 2-core machine (a whole spec run through the CLI, a model
#: choice with its bootstrap): every test that uses one is marked slow at collection, as running it alone costs
#: that much (measured: lecture_run 9 s, poisson_run 10.6 s, the LRT's fit 8.6 s). Keyed "file::fixture", the
#: file being where the fixture is defined ("tests/conftest.py" for the session fixtures here).
SLOW_FIXTURES = {
    "tests/conftest.py::lecture_run",
    "tests/test_poisson_run.py::poisson_run",
    "tests/test_model_choice_lrt.py::tested",
}


def _uses_slow_fixture(item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for name, defs in info.name2fixturedefs.items():
        if defs and name in item.fixturenames:
            where = defs[-1].baseid.split("::", 1)[0] or "tests"
            where = f"{where}/conftest.py" if not where.endswith(".py") else where
            if f"{where}::{name}" in SLOW_FIXTURES:
                return True
    return False


def quick_run_group(name: str) -> pytest.MarkDecorator:
    """The pytest-xdist group of every test that reads ``quick_run(name)``, so the one worker that runs them
    makes that run once (a session fixture is made once per worker, not once per test run)."""
    return pytest.mark.xdist_group(f"quick_run-{name}")


def _shared_scope_fixtures(item) -> list[str]:
    """The fixtures ``item`` uses that outlive one test: session fixtures of this file, and module or class
    fixtures (made once per file)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return [name for name, defs in info.name2fixturedefs.items()
            if defs and defs[-1].scope in ("module", "class", "session") and defs[-1].baseid != ""]


# tryfirst: before pytest's -m deselection (which needs the slow marks) and before pytest-xdist appends the
# group to each node id (which SLOW_CASES would then no longer match).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in SLOW_CASES or _uses_slow_fixture(item):
            item.add_marker(pytest.mark.slow)
        # bin/test runs two pytest-xdist workers with --dist loadgroup: tests of one group run in one worker,
        # one after another. A test that reads the session's lecture_run joins that run's group; one that
        # names its group (quick_run_group) keeps it; one using a module fixture runs with its file, so the
        # fixture is made once; any other test is handed out on its own.
        if any(True for _ in item.iter_markers("xdist_group")):
            continue
        if "lecture_run" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("lecture_run"))
        elif _shared_scope_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    if getattr(config, "workerinput", None) is not None and config.getoption("loadgroup", False):
        # pytest-xdist hands out the largest groups first, then single tests in this order: the slow ones
        # first, so the run does not end on one long test while the other worker is idle.
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
        _write_groups(Path(config.option.basetemp).parent / GROUPS_FILE, items)


#: where each pytest-xdist worker writes node id -> group for the controller's scheduler (in the run's basetemp)
GROUPS_FILE = "xdist-groups.json"


def _write_groups(path: Path, items) -> None:
    """node id -> xdist group of every item, written whole (a temporary renamed into place): both workers
    write the same text, and the scheduler reads it once both have collected."""
    groups = {item.nodeid: "_".join(sorted(str(m.args[0]) for m in item.iter_markers("xdist_group")))
              for item in items if item.get_closest_marker("xdist_group")}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(groups), encoding="utf-8")
    os.replace(tmp, path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup with the groups given above. pytest-xdist 3.8 finds a test's group in a suffix it
    appends to the node id, which pytest 9.2 no longer lets it change (so every test would be its own group):
    this scheduler reads the groups the workers wrote instead, and still honours such a suffix."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    groups_path = config._tmp_path_factory.getbasetemp() / GROUPS_FILE

    class SharedFixtureScheduling(LoadGroupScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):
                return super()._split_scope(nodeid)
            if self.groups is None:
                self.groups = json.loads(groups_path.read_text(encoding="utf-8"))
            return self.groups.get(nodeid, nodeid)

    return SharedFixtureScheduling(config, log)
