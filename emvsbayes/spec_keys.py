"""Every comparison-spec key with its default and meaning, rendered from :data:`emvsbayes.spec.SCHEMA`.

The defaults come from the schema itself, so the table in README.md ("Spec keys") cannot drift from
what ``load_spec`` fills in: ``tests/test_spec_keys.py`` checks that the README holds exactly
:func:`spec_keys_markdown`, and ``emvsbayes spec-keys`` prints it (``--write README.md`` replaces the
table between its markers).
"""

from __future__ import annotations

import json
from pathlib import Path

from emvsbayes.errors import UserError
from emvsbayes.spec import REQUIRED as _REQUIRED
from emvsbayes.spec import GAUSSIAN_MAX_INIT, auto_init, GAUSSIAN_REACH_BEST, SCHEMA

#: What each key means, by (section, key); "" is the top of the file. Every schema key needs one.
KEY_DOCS: dict[tuple[str, str], str] = {
    ("", "title"): "the report's title (default: the spec file's name)",
    ("", "description"): "a sentence or two shown at the top of the report",
    ("", "seed"): "master seed of every random stage; without one a seed is drawn and recorded in results.nc",
    ("data", "dataset"): "a bundled data set (`emvsbayes datasets` lists them); give this or `file`",
    ("data", "file"): "a CSV file, relative to the spec's folder; its first line names the columns",
    ("data", "store"): ("data larger than memory: a Zarr store (path relative to the spec's folder) of N rows by D "
                        "float columns, fitted by chunked EM on a Dask cluster (`run --scheduler`, else a local one); "
                        "EM only: needs `[bayes] enabled = false`, `[em] bootstrap = 0`, `information = false`, "
                        "`kmeans = false`; give this, `dataset` or `file`"),
    ("data", "store_array"): "the array to fit when `store` is a Zarr group (its name inside the group)",
    ("data", "encoding"): 'text encoding of `file`, e.g. "gb18030"',
    ("data", "heads"): "coins: the column of heads counts",
    ("data", "tosses"): "coins: the column of toss counts",
    ("data", "label"): "a column that names the rows in tables (not fitted); default: rows numbered 1, 2, ...",
    ("data", "truth"): "a column of known groups (any text): not fitted; every clustering is compared with it "
                       "(adjusted Rand index, confusion tables)",
    ("data", "columns"): "the columns to fit, in order; default: every column but `label`, `truth` and `drop`",
    ("data", "drop"): "columns not to fit (text columns, identifiers, ...)",
    ("data", "delimiter"): "separator between cells: \"auto\" (a comma, or a semicolon, tab or vertical bar when the header splits on it), or the character itself",
    ("data", "percent"): 'columns written as percents ("28%"), read as fractions (0.28)',
    ("data", "categories"): 'numbers for the words of text columns: `{ "column" = { "word" = 0, ... } }`',
    ("data", "standardize"): "z-score every fitted column (population sd)",
    ("model", "family"): '"coins" (binomial mixture), "gaussian" (Gaussian mixture), "poisson" (Poisson mixture) or '
                         '"hmm" (hidden Markov model); required',
    ("model", "components"): "K, the number of components",
    ("model", "weights"): 'coins: "equal" (each coin equally likely) or "estimated"',
    ("model", "labels"): 'coins: one short name per coin, e.g. ["A", "B"]; default: numbered 0, 1, ...',
    ("model", "covariance"): 'Gaussians: "full", "tied", "diag" or "spherical" (scikit-learn\'s covariance_type)',
    ("model", "reg_covar"): "Gaussians: added to covariance diagonals, as scikit-learn does",
    ("em", "kinds"): 'kinds of EM: "soft" (probabilities; required) and "hard" (one component per row)',
    ("em", "init"): f'starting points: "auto" ({auto_init("gaussian")} for Gaussians, {auto_init("coins")} thetas '
                    'for coins), a scikit-learn init_params name, or given parameters',
    ("em", "n_init"): "the fewest starts (restarts)",
    ("em", "reach_best"): f"Gaussians: after n_init starts, keep starting until this many end at the best "
                          f"log-likelihood (default {GAUSSIAN_REACH_BEST})",
    ("em", "max_init"): f"Gaussians: the most starts (default {GAUSSIAN_MAX_INIT}, or n_init if larger)",
    ("em", "tol"): "stop when the log-likelihood gains less than this in an iteration ...",
    ("em", "param_tol"): "... and no parameter moves more than this",
    ("em", "max_iter"): "the most iterations per start",
    ("em", "kmeans"): "also run k-means (Gaussians), compared with EM's clusters",
    ("em", "information"): "standard errors and Wald intervals from the observed information",
    ("em", "bootstrap"): "bootstrap replicates for EM's intervals; 0 turns the bootstrap off",
    ("em", "bootstrap_kind"): '"nonparametric" (resample rows) or "parametric" (simulate from EM\'s answer); "auto": the family\'s kind (parametric for a hidden Markov model, whose rows cannot be resampled, else nonparametric)',
    ("bayes", "enabled"): "sample the posterior at all",
    ("bayes", "variant"): '"symmetric" (exchangeable components: label switching) or "ordered" (identified)',
    ("bayes", "sampler"): '"auto", "numpyro", "nutpie" or "pymc"',
    ("bayes", "chains"): "chains",
    ("bayes", "draws"): "draws per chain, after tuning",
    ("bayes", "tune"): "tuning steps per chain",
    ("bayes", "target_accept"): 'NUTS\' target acceptance; "auto" raises it when a Gaussian component holds few points',
    ("bayes", "theta_prior"): "coins: Beta(a, b) prior on each theta",
    ("bayes", "w_concentration"): "Dirichlet concentration of the weights",
    ("bayes", "mu_loc"): "Gaussians: prior mean of the means (one number or one per column); default: each column's mean",
    ("bayes", "mu_scale"): "Gaussians: prior sd of the means; default: twice each column's sd",
    ("bayes", "sigma_scale"): "Gaussians: half-normal prior scale of the standard deviations; default: each column's sd",
    ("bayes", "lkj_eta"): "Gaussians: LKJ prior on correlations (1: uniform)",
    ("bayes", "relabel"): 'how draws are relabelled: "auto", "stephens", "pivot", "ecr", "ecr_iterative", "order"',
    ("bayes", "exact"): 'coins: the exact posterior by enumeration ("auto": when small enough)',
    ("model_choice", "components"): "K values to compare (BIC, AIC, ICL from EM; PSIS-LOO and WAIC from a posterior)",
    ("model_choice", "covariance"): "covariance structure for the comparison; default: [model] covariance",
    ("model_choice", "bayes"): "sample a posterior per K (PSIS-LOO, WAIC)",
    ("model_choice", "chains"): "chains per K",
    ("model_choice", "draws"): "draws per chain per K",
    ("ladder", "enabled"): "run the uncertainty ladder (Laplace at the posterior mode, and the rungs below) after the posterior",
    ("ladder", "rungs"): 'rungs besides Laplace: "map_em" (coins, Gaussians, Poisson), "advi_meanfield", "advi_fullrank", "bootstrap_bayesian"',
    ("ladder", "vi_iter"): "ADVI iterations (pm.fit) per ADVI rung",
    ("ladder", "draws"): "draws from the Laplace and ADVI approximations",
    ("ladder", "bootstrap"): ("EM refits of each of the ladder's own bootstraps: the Bayesian one (Dirichlet(1, ..., 1) "
                              "row weights) and the kind the run's `[em] bootstrap` did not do (parametric beside a "
                              "nonparametric run; a series has no nonparametric one)"),
    ("ladder", "engine"): ("how Laplace and ADVI run: \"programs\" (PyMC's ADVI algorithm and Laplace search on the "
                           "model's exported JAX programs, stored per model, so a warm run needs no PyMC) or \"pymc\" "
                           "(PyMC's own `pm.fit` and log-density functions, compiled in the run)"),
    ("model_choice", "tune"): "tuning steps per chain per K",
    ("model_choice", "lrt_bootstrap"): "bootstrap data sets B for the likelihood-ratio test of K against K + 1 "
                                       "(each K listed with its K + 1); 0: no test",
    ("model_choice", "sparse"): "fit an overfitted (sparse) mixture and report the posterior of the number of "
                                "occupied components (mixtures with estimated weights)",
    ("model_choice", "sparse_components"): "K_max, the sparse mixture's components (more than the data need)",
    ("model_choice", "sparse_concentration"): "e0 of the sparse mixture's Dirichlet(e0, ..., e0) weights "
                                              "(Malsiner-Walli et al. 2016: 0.01)",
    ("report", "interval_prob"): "probability of every interval in the report (0.01 to 0.999)",
}

BEGIN = "<!-- spec-keys: generated by `emvsbayes spec-keys`; do not edit by hand -->"
END = "<!-- /spec-keys -->"


def _default_text(section: str, key: str, default) -> str:
    if default is _REQUIRED:
        return "required"
    if default is None:
        return {("em", "reach_best"): f"{GAUSSIAN_REACH_BEST} (Gaussians)",
                ("em", "max_init"): f"{GAUSSIAN_MAX_INIT} (Gaussians)"}.get((section, key), "none")
    if isinstance(default, bool):
        return "true" if default else "false"
    return json.dumps(default, ensure_ascii=False)


def family_keys() -> list[tuple[str, str, str, object, str]]:
    """(family, section, key, default, meaning) of each family's own spec keys (not in the shared schema), in the
    registry's order; a family's ``spec_key_docs`` must describe every one."""
    from emvsbayes.family import family_names, get_family

    rows = []
    for name in family_names():
        family = get_family(name)
        docs = getattr(family, "spec_key_docs", dict)()
        for section, keys in family.spec_defaults().items():
            for key, default in keys.items():
                if key in SCHEMA.get(section, {}):
                    continue
                if (section, key) not in docs:
                    raise KeyError(f"the {name} family's spec key [{section}] {key} has no description in its spec_key_docs")
                rows.append((name, section, key, default, docs[section, key]))
    return rows


def spec_keys_markdown() -> str:
    """The Markdown table of every spec key: section, key, default, meaning (one row per schema key, then one
    per family's own key, its meaning starting with the family)."""
    missing = [f"[{s}] {k}" for s, keys in SCHEMA.items() for k in keys if (s, k) not in KEY_DOCS]
    if missing:
        raise KeyError(f"spec keys without a description in KEY_DOCS: {', '.join(missing)}")
    lines = ["| section | key | default | meaning |", "|---|---|---|---|"]
    for section, keys in SCHEMA.items():
        for key, rule in keys.items():
            where = f"[{section}]" if section else "(top)"
            default = _default_text(section, key, rule.default).replace("|", "\\|")
            lines.append(f"| {where} | `{key}` | `{default}` | {KEY_DOCS[section, key].replace('|', '/')} |")
    for family, section, key, default, meaning in family_keys():
        shown = _default_text(section, key, default).replace("|", "\\|")
        lines.append(f"| [{section}] | `{key}` | `{shown}` | {family}: {meaning.replace('|', '/')} |")
    return "\n".join(lines)


def readme_block() -> str:
    """The table with the markers that delimit it in README.md."""
    return f"{BEGIN}\n{spec_keys_markdown()}\n{END}"


def replace_in_readme(text: str, name: str = "the README") -> str:
    """``text`` (a README; ``name`` in messages) with the table between its markers regenerated."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise UserError(f"{name} has no spec-keys table to replace; add the two lines {BEGIN!r} and {END!r} "
                        "where it belongs")
    return text[:start] + readme_block() + text[end + len(END):]


def write_readme(path: str | Path) -> Path:
    """Regenerate the table in the README at ``path`` (written only when it changes)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror}); give the path of README.md") from None
    new = replace_in_readme(text, str(path))
    if new != text:
        from emvsbayes.results import atomic_write  # a README is never left half-written

        atomic_write(path, lambda tmp: tmp.write_text(new, encoding="utf-8"))
    return path
