"""Honest uncertainty for the EM side, so the report compares interval against interval.

- :mod:`~emvsbayes.uncertainty.information`: standard errors and Wald intervals from the observed
  information (exact Hessian in an unconstrained parametrisation, delta method), or a flag and a reason
  when the information is singular;
- :mod:`~emvsbayes.uncertainty.information_programs`: the observed-information function of a family
  structure (its PyTensor graph through PyTensor's JAX linker) exported once and kept on disk, so a
  later process evaluates it with JAX alone;
- :mod:`~emvsbayes.uncertainty.bootstrap`: nonparametric and parametric bootstrap, refits from the
  EM answer aligned to it, in parallel, reproducible whatever the number of workers;
- :mod:`~emvsbayes.uncertainty.agreement`: membership differences, assignment entropy, adjusted Rand index;
- :mod:`~emvsbayes.uncertainty.model_choice`: BIC, AIC, ICL (lower is better), PSIS-LOO and WAIC
  (higher is better).

Arrays in, small frozen records out; each record has a ``to_dataset`` where an xarray view is useful.
JAX (for the Hessians; pytensor only to build their programs the first time) and ArviZ (for LOO) are
imported only when those functions run.
"""

from emvsbayes.uncertainty.agreement import (
    MembershipDifference,
    adjusted_rand_index,
    align_memberships,
    ari_matrix,
    assignment_entropy,
    confusion_table,
    hard_labels,
    membership_difference,
)
from emvsbayes.uncertainty.bootstrap import (
    KINDS,
    BootstrapResult,
    align_to_reference,
    run_bootstrap,
    percentile_intervals,
)
from emvsbayes.uncertainty.information import (
    BOUNDARY_TOL,
    CONDITION_LIMIT,
    INTERVAL_SCALES,
    MIN_EXPECTED_COUNT,
    SCALE_DESCRIPTIONS,
    StandardErrors,
    compile_information,
    information_function,
    standard_errors,
    standard_errors_from_hessian,
    wald_interval,
)
from emvsbayes.uncertainty.model_choice import (
    LFO_PARETO_K_THRESHOLD,
    PARETO_K_THRESHOLD,
    WAIC_VARIANCE_THRESHOLD,
    InformationCriteria,
    PredictiveCriteria,
    criteria,
    degenerate_components,
    singular_components,
    information_criteria,
    LeaveFutureOut,
    lfo_first,
    loo_waic,
    min_component_points,
    psis_lfo,
    responsibility_entropy,
)

__all__ = [
    "BOUNDARY_TOL",
    "CONDITION_LIMIT",
    "INTERVAL_SCALES",
    "KINDS",
    "MIN_EXPECTED_COUNT",
    "SCALE_DESCRIPTIONS",
    "PARETO_K_THRESHOLD",
    "LFO_PARETO_K_THRESHOLD",
    "WAIC_VARIANCE_THRESHOLD",
    "BootstrapResult",
    "InformationCriteria",
    "MembershipDifference",
    "PredictiveCriteria",
    "LeaveFutureOut",
    "lfo_first",
    "psis_lfo",
    "StandardErrors",
    "adjusted_rand_index",
    "align_memberships",
    "align_to_reference",
    "run_bootstrap",
    "compile_information",
    "criteria",
    "information_function",
    "standard_errors",
    "ari_matrix",
    "assignment_entropy",
    "confusion_table",
    "degenerate_components",
    "singular_components",
    "hard_labels",
    "information_criteria",
    "loo_waic",
    "membership_difference",
    "min_component_points",
    "percentile_intervals",
    "responsibility_entropy",
    "standard_errors_from_hessian",
    "wald_interval",
]
