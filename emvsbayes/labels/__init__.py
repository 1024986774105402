"""Label switching: relabelling methods and diagnostics as pure functions over numpy arrays.

Arrays of draws have shape (S, K, ...) with the component axis right after the draw axis; a
permutation array ``perms`` (S, K) means new component ``j`` of draw ``s`` is old ``perms[s, j]``.
The same functions serve posterior draws, bootstrap replicates and EM restarts.
:mod:`emvsbayes.labels.xarray` is the adapter to named dimensions (imported on demand, so the
numerical core does not load ArviZ).
"""

from emvsbayes.labels.diagnostics import (
    BIMODALITY_THRESHOLD,
    ChainSwitching,
    ModeSummary,
    Optimum,
    SortedSummary,
    bimodality,
    chain_permutations,
    coclustering,
    distinct_optima,
    modes_up_to_permutation,
    sorted_summary,
    switch_count,
)
from emvsbayes.labels.relabel import (
    METHODS,
    Relabelling,
    agreement,
    all_permutations,
    apply_permutations,
    count_changed,
    ecr,
    ecr_iterative,
    invert_permutations,
    label_features,
    order_by,
    permute_labels,
    permute_probs,
    pivot,
    pivot_cost,
    relabel,
    solve_assignments,
    stephens,
)

__all__ = [
    "BIMODALITY_THRESHOLD",
    "METHODS",
    "ChainSwitching",
    "ModeSummary",
    "Optimum",
    "Relabelling",
    "SortedSummary",
    "agreement",
    "all_permutations",
    "apply_permutations",
    "bimodality",
    "chain_permutations",
    "coclustering",
    "count_changed",
    "distinct_optima",
    "ecr",
    "ecr_iterative",
    "invert_permutations",
    "label_features",
    "modes_up_to_permutation",
    "order_by",
    "permute_labels",
    "permute_probs",
    "pivot",
    "pivot_cost",
    "relabel",
    "solve_assignments",
    "sorted_summary",
    "stephens",
    "switch_count",
]
