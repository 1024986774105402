"""Bootstrap of an EM answer: nonparametric (resample sets / rows) and parametric (simulate the fit).

Each of the B replicates is refitted by EM starting from the reference answer, so a replicate lands on
the optimum that corresponds to the reference's rather than on whichever one a random start finds;
its components are then aligned to the reference's by :func:`emvsbayes.labels.pivot` (a K x K
assignment per replicate), because even a refit from the reference can come back renamed when two
components are close. The aligned replicates are draws-like: ``draws[name]`` has shape (B, K, ...),
with the names and dimensions of the EM estimate, and :meth:`BootstrapResult.to_dataset` names the
axes ``replicate``, ``component``, ... so ArviZ can summarise them next to a posterior.

Two routes refit the replicates, with the same answers (to rounding: the tests compare them replicate
by replicate). For a small problem (the bundled specs: tens to hundreds of rows) the B refits are one
batched EM over a leading replicate axis (:func:`emvsbayes.em.fit_em_batched` with the family's batched
steps), each replicate stopping or failing exactly as its own :func:`emvsbayes.em.fit_em` would; a
resample is kept as counts per row (weighted sums over the original rows are the resample's sums), a
parametric replicate as its simulated data set, stacked: for such data one fit at a time spends its
time in numpy's per-call overhead, and B fits per call cost little more than one
(``benchmarks/bootstrap.py``). Where one fit is large (``LARGE_FIT``), or with EM options
the batched steps do not take (hard EM), each replicate is refitted on its own, in processes when they
pay (below).

Randomness: replicate ``b`` uses its own child ``np.random.SeedSequence(seed).spawn(B)[b]`` and draws
from it the same way on both routes, so the result does not depend on the route, on how replicates
were grouped, on how many worker processes ran or in what order they finished. Workers are
separate processes (``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method: forking
a process that may hold pytensor, JAX or BLAS threads is not safe). A spawned worker first imports
emvsbayes (seconds), so by default the first chunk of replicates runs here and times the work: the
rest goes to one worker per core only if that saves more than starting them costs.

A replicate whose refit fails (a covariance that cannot be factorised, a component left with no data,
a simulated data set the model cannot take) is recorded as NaN, with its message; the run never stops
for it.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emvsbayes.em import take_rows
from emvsbayes.errors import LikelihoodDecreasedError, UserError
from emvsbayes.labels import apply_permutations, pivot

__all__ = [
    "KINDS",
    "BootstrapResult",
    "align_to_reference",
    "run_bootstrap",
    "percentile_intervals",
]

KINDS = ("nonparametric", "parametric")

#: What a failed replicate may raise: the model's own "cannot fit" errors (DegenerateFitError is a
#: UserError, as are the simulators' checks), a likelihood decrease (a step's rounding trouble on odd
#: data), and numerical failures from numpy. Anything else is a bug and propagates. A refit that ends
#: with a non-finite estimate is counted as failed too.
REPLICATE_ERRORS = (UserError, LikelihoodDecreasedError, np.linalg.LinAlgError, FloatingPointError)

# EM settings for the refits unless the caller gives others: the estimate's usual stopping rule, no
# per-iteration statistics kept (B traces of N x K responsibilities are not wanted).
DEFAULT_EM_OPTIONS = {"keep_stats": False}


# --------------------------------------------------------------------------------------------------
# The replicates. A family's bootstrap target (``family.bootstrap_target(model_def, data)``) says how
# to resample (``n_obs``, ``take``), simulate, refit one replicate or a batch (``refit``,
# ``refit_batched``, ``single_fit_size``) and name the dims of its variables (``dims``).


@dataclass(frozen=True, slots=True)
class _Replicate:
    index: int
    variables: dict | None
    loglik: float
    converged: bool
    message: str


def _one_replicate(family, data, reference, kind: str, seed: np.random.SeedSequence, index: int, options) -> _Replicate:
    rng = np.random.default_rng(seed)
    try:
        if kind == "nonparametric":
            n = family.n_obs(data)
            sample = family.take(data, rng.integers(0, n, size=n))
        else:
            sample = family.simulate(data, reference, rng)
        fit = family.refit(sample, reference, options)
    except REPLICATE_ERRORS as error:
        return _failure(index, error)
    return _checked(index, fit.params, float(fit.loglik), bool(fit.converged))


def _failure(index: int, error: Exception) -> _Replicate:
    message = " ".join(str(error).split())
    return _Replicate(index, None, float("nan"), False, f"{type(error).__name__}: {message}")


def _checked(index: int, params, loglik: float, converged: bool) -> _Replicate:
    variables = {name: np.array(value, dtype=float) for name, value in params.variables().items()}
    if not all(np.all(np.isfinite(v)) for v in variables.values()) or not np.isfinite(loglik):
        return _Replicate(index, None, float("nan"), False, "non-finite estimate or log-likelihood")
    return _Replicate(index, variables, loglik, converged, "")


def _run_chunk(family, data, reference, kind, seeds, indices, options) -> list[_Replicate]:
    return [_one_replicate(family, data, reference, kind, s, i, options) for s, i in zip(seeds, indices)]


def _batched_chunk(family, data, reference, kind: str, seeds, indices, options) -> list[_Replicate]:
    """The replicates ``indices`` as :func:`_one_replicate` gives them, refitted together.

    Each replicate draws from its own generator exactly what :func:`_one_replicate` draws (the same
    calls in the same order), so its data set is the same; a resample is kept as counts per row.
    """
    n = family.n_obs(data)
    failures = {}
    counts, samples, fitted = [], [], []
    for seed, index in zip(seeds, indices):
        rng = np.random.default_rng(seed)
        try:
            if kind == "nonparametric":
                counts.append(np.bincount(rng.integers(0, n, size=n), minlength=n).astype(float))
            else:
                samples.append(family.simulate(data, reference, rng))
        except REPLICATE_ERRORS as error:
            failures[index] = _failure(index, error)
            continue
        fitted.append(index)
    out = [failures[index] for index in indices if index in failures]
    if not fitted:
        return out
    fit = family.refit_batched(data, samples if kind == "parametric" else None,
                               np.stack(counts) if kind == "nonparametric" else None, reference, options)
    for row, index in enumerate(fitted):
        if fit.errors[row]:
            out.append(_Replicate(index, None, float("nan"), False, fit.errors[row]))
            continue
        params = take_rows(fit.params, row)
        out.append(_checked(index, params, float(fit.loglik[row]), bool(fit.converged[row])))
    return out


#: EM options the batched refit takes (soft EM only); with any other, replicates are refitted one by one.
BATCHED_OPTIONS = frozenset({"tol", "param_tol", "max_iter", "min_iter", "keep_stats", "kind"})

#: A single refit above this size (N K D^2 for Gaussians, N K for coins) is large enough to run one at
#: a time (in processes when they pay): its own arrays already amortise numpy's per-call overhead, and
#: the per-replicate E-step's cache-sized blocks beat B-fold arrays. Measured with B = 10, K = 2: the
#: batched route 2.9x faster at N = 5000, D = 1 (size 1e4), even at N = 5e4, D = 1 (1e5), 0.7x at
#: N = 1e4, D = 3 (1.8e5). Replicates are batched in groups of about BATCH_VALUES / size.
LARGE_FIT = 50_000
BATCH_VALUES = 2_000_000

ROUTES = ("auto", "batched", "per-replicate")


def _batchable(options) -> bool:
    return set(options) <= BATCHED_OPTIONS and options.get("kind", "soft") == "soft"


# --------------------------------------------------------------------------------------------------
# The result


def percentile_intervals(draws: Mapping[str, np.ndarray], level: float = 0.95) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Equal-tailed percentile intervals over the first axis, ignoring NaN (failed replicates).

    Returns
    -------
    dict of str to (lower, upper), each shaped as one draw (K, ...).
    """
    tail = (1.0 - level) / 2
    out = {}
    for name, x in draws.items():
        x = np.asarray(x, dtype=float)
        if np.all(np.isnan(x)):
            nan = np.full(x.shape[1:], np.nan)
            out[name] = (nan, nan.copy())
            continue
        out[name] = (np.nanquantile(x, tail, axis=0), np.nanquantile(x, 1.0 - tail, axis=0))
    return out


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    """B bootstrap replicates of an EM answer, aligned to it.

    Attributes
    ----------
    draws : dict of str to ndarray, each (B, K, ...)
        Replicate estimates on the natural scale with the EM estimate's names (coins: ``theta``, ``w``;
        Gaussians: ``w``, ``mu``, ``sigma`` (1-D) or ``cov`` (D > 1)), components aligned to
        ``reference``; rows of failed replicates are NaN.
    reference : dict of str to ndarray, each (K, ...)
        The answer the replicates started from and were aligned to.
    dims : dict of str to tuple of str
        Dimension names of each variable after ``replicate`` (``component``, ``feature``, ...).
    loglik : ndarray, shape (B,)
        Final log-likelihood of each refit on its own replicate data set; NaN when failed.
    converged : ndarray of bool, shape (B,)
        The refit met EM's stopping rule (False for failed replicates).
    failed : ndarray of bool, shape (B,)
    messages : tuple of str
        ``"replicate b: <error>"`` for each failed replicate, in replicate order.
    perms : ndarray of int, shape (B, K)
        The alignment applied: aligned component j of replicate b is its refit's component ``perms[b, j]``
        (the identity for failed replicates).
    kind : str
        ``"nonparametric"`` or ``"parametric"``.
    seed : int or None
        The entropy of the root ``SeedSequence``.
    """

    draws: dict
    reference: dict
    dims: dict
    loglik: np.ndarray
    converged: np.ndarray
    failed: np.ndarray
    messages: tuple[str, ...]
    perms: np.ndarray
    kind: str
    seed: Any = field(default=None)

    @property
    def n_boot(self) -> int:
        return int(self.loglik.shape[0])

    @property
    def n_failed(self) -> int:
        return int(self.failed.sum())

    @property
    def n_unconverged(self) -> int:
        """Replicates that ran but stopped at ``max_iter`` (kept in ``draws``)."""
        return int((~self.converged & ~self.failed).sum())

    @property
    def n_relabelled(self) -> int:
        """Replicates whose components needed renaming to match the reference."""
        return int(np.any(self.perms != np.arange(self.perms.shape[1]), axis=1).sum())

    def sd(self) -> dict[str, np.ndarray]:
        """Bootstrap standard deviation of each element (ddof=1), failed replicates left out."""
        return {name: np.nanstd(x, axis=0, ddof=1) for name, x in self.draws.items()}

    def intervals(self, level: float = 0.95) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Percentile intervals; see :func:`percentile_intervals`."""
        return percentile_intervals(self.draws, level)

    def to_dataset(self):
        """The replicates as an ``xarray.Dataset`` with dims ``replicate``, ``component``, ...

        Summarise it with ArviZ as draws along ``replicate``, e.g.
        ``az.summary(ds, sample_dims=["replicate"], kind="stats")``. Attributes record the kind, B and
        the count of failed and unconverged replicates; each replicate's ``loglik``, ``converged`` and
        ``failed`` are coordinates along ``replicate``.
        """
        import xarray as xr

        data = {name: (("replicate", *self.dims[name]), x) for name, x in self.draws.items()}
        k = self.perms.shape[1]
        # Per-replicate facts are coordinates, not variables, so a summary of the variables shows only
        # the parameters, as for a posterior.
        coords = {
            "replicate": np.arange(self.n_boot),
            "component": np.arange(k),
            "loglik": ("replicate", self.loglik),
            "converged": ("replicate", self.converged),
            "failed": ("replicate", self.failed),
        }
        attrs = {
            "bootstrap": self.kind,
            "n_boot": self.n_boot,
            "n_failed": self.n_failed,
            "n_unconverged": self.n_unconverged,
        }
        return xr.Dataset(data, coords=coords, attrs=attrs)


# --------------------------------------------------------------------------------------------------
# Alignment


def align_to_reference(
    draws: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], ok: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rename each replicate's components to best match ``reference`` (Hungarian assignment).

    Parameters
    ----------
    draws : mapping of str to ndarray, each (B, K, ...)
    reference : mapping of str to ndarray, each (K, ...)
    ok : ndarray of bool, shape (B,), optional
        Replicates to align (the others, e.g. failed NaN rows, keep the identity).

    Returns
    -------
    (aligned draws, perms (B, K))
    """
    draws = {name: np.asarray(x, dtype=float) for name, x in draws.items()}
    b, k = next(iter(draws.values())).shape[:2]
    ok = np.ones(b, dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
    perms = np.broadcast_to(np.arange(k), (b, k)).copy()
    if ok.any():
        # pivot's default scale: each variable's spread about the reference within a component, estimated
        # from the replicates themselves, starting from a label-invariant one, so aligning does not
        # presuppose an alignment.
        perms[ok] = pivot({name: x[ok] for name, x in draws.items()}, reference).perms
    return apply_permutations(draws, perms), perms


# --------------------------------------------------------------------------------------------------
# The driver


def _chunks(n: int, n_workers: int) -> list[np.ndarray]:
    # About four chunks per worker: enough to balance uneven refit times and to report progress,
    # few enough that pickling the data per chunk costs nothing noticeable.
    n_chunks = min(n, max(1, 4 * n_workers))
    return [c for c in np.array_split(np.arange(n), n_chunks) if c.size]


def _default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


#: Seconds a spawned worker takes before its first replicate (start Python, import emvsbayes): measured
#: 2-3 s on the 2-core reference machine. 200 two-coin replicates take 1.6 s serially and 2.5 s on two
#: workers; a Gaussian bootstrap of a few hundred points and more gains from them.
WORKER_START_SECONDS = 2.5


def _worth_workers(seconds_left_serial: float, n_workers: int) -> bool:
    """Whether ``n_workers`` processes finish the remaining work sooner than this process alone."""
    return seconds_left_serial * (1.0 - 1.0 / n_workers) > WORKER_START_SECONDS


def _bootstrap(
    family,
    data,
    reference,
    *,
    n_boot: int,
    kind: str,
    seed,
    n_workers: int | None,
    progress: Callable[[int, int], None] | None,
    em_options: Mapping[str, Any] | None,
    route: str = "auto",
) -> BootstrapResult:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    options = {**DEFAULT_EM_OPTIONS, **(em_options or {})}
    if route == "batched" and not _batchable(options):
        raise ValueError(f"the batched route runs soft EM with options {sorted(BATCHED_OPTIONS)} only, got {options}")
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    seeds = root.spawn(n_boot)
    single_fit = family.single_fit_size(data, reference)
    if route == "batched" or (route == "auto" and _batchable(options) and single_fit <= LARGE_FIT):
        results = []
        groups = -(-n_boot // max(1, BATCH_VALUES // single_fit))
        for chunk in np.array_split(np.arange(n_boot), groups):
            results += _batched_chunk(family, data, reference, kind, [seeds[i] for i in chunk], chunk.tolist(), options)
            if progress is not None:
                progress(len(results), n_boot)
        return _result(family, reference, results, kind, root)
    decide = n_workers is None
    n_workers = _default_workers() if n_workers is None else max(1, int(n_workers))
    chunks = _chunks(n_boot, n_workers)
    results: list[_Replicate] = []
    done = 0

    def run_here(chunk) -> None:
        nonlocal done
        results.extend(_run_chunk(family, data, reference, kind, [seeds[i] for i in chunk], chunk.tolist(), options))
        done += chunk.size
        if progress is not None:
            progress(done, n_boot)

    if decide and n_workers > 1:
        started = time.perf_counter()
        run_here(chunks[0])
        per_replicate = (time.perf_counter() - started) / chunks[0].size
        chunks = chunks[1:]
        if not _worth_workers(per_replicate * (n_boot - done), n_workers):
            n_workers = 1
    if n_workers == 1:
        for chunk in chunks:
            run_here(chunk)
    elif chunks:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
            futures = {
                pool.submit(_run_chunk, family, data, reference, kind, [seeds[i] for i in c], c.tolist(), options): c
                for c in chunks
            }
            for future in as_completed(futures):
                results += future.result()
                done += futures[future].size
                if progress is not None:
                    progress(done, n_boot)
    return _result(family, reference, results, kind, root)


def _result(family, reference, results: list[_Replicate], kind: str, root) -> BootstrapResult:
    results = sorted(results, key=lambda r: r.index)
    ref_vars = {name: np.array(value, dtype=float) for name, value in reference.variables().items()}
    failed = np.array([r.variables is None for r in results])
    raw = {
        name: np.stack([r.variables[name] if r.variables is not None else np.full(x.shape, np.nan) for r in results])
        for name, x in ref_vars.items()
    }
    draws, perms = align_to_reference(raw, ref_vars, ~failed)
    return BootstrapResult(
        draws=draws,
        reference=ref_vars,
        dims=family.dims(reference),
        loglik=np.array([r.loglik for r in results]),
        converged=np.array([r.converged for r in results]),
        failed=failed,
        messages=tuple(f"replicate {r.index}: {r.message}" for r in results if r.variables is None),
        perms=perms,
        kind=kind,
        seed=root.entropy,
    )


def run_bootstrap(
    family,
    model_def,
    data,
    reference,
    *,
    n_boot: int,
    seed,
    kind: str = "nonparametric",
    n_workers: int | None = 1,
    progress: Callable[[int, int], None] | None = None,
    em_options: Mapping[str, Any] | None = None,
    route: str = "auto",
) -> BootstrapResult:
    """Bootstrap an EM answer of any family.

    Parameters
    ----------
    family : emvsbayes.family.Family
    model_def, data
        The family's model definition and data record.
    reference
        The EM answer (a parameter record): every refit starts from it and is aligned to it.
    n_boot : int
        B, the number of replicates.
    seed : int or numpy.random.SeedSequence
        Root of the replicates' seeds (replicate b uses child b of ``SeedSequence(seed).spawn(B)``).
    kind : {"nonparametric", "parametric"}
        Resample the N observations with replacement, or simulate N from ``reference`` (the coins keep
        each set's tosses).
    n_workers : int or None
        Worker processes of the per-replicate route; 1 runs in this process, None one per available
        core when the first chunk's time says they pay for their start-up (see the module docstring).
        The result does not depend on it.
    progress : callable (done, total), optional
        Called in this process as replicates finish.
    em_options : mapping, optional
        Passed to the family's EM (``tol``, ``param_tol``, ``max_iter``, ...).
    route : {"auto", "batched", "per-replicate"}
        How the replicates are refitted (see the module docstring): ``"auto"`` batched unless one fit is
        large or ``em_options`` ask for what the batched steps do not do (hard EM); ``"per-replicate"``
        one :func:`emvsbayes.em.fit_em` per replicate (the reference the batched route is tested
        against). The replicates are the same either way.

    Returns
    -------
    BootstrapResult
        ``draws[name]`` (B, K, ...) for every variable of ``family.variables(reference)``.
    """
    validate = getattr(family, "validate_params", None)
    if validate is not None:
        validate(model_def, reference)
    target, target_data = family.bootstrap_target(model_def, data)
    return _bootstrap(
        target, target_data, reference, n_boot=n_boot, kind=kind, seed=seed, n_workers=n_workers,
        progress=progress, em_options=em_options, route=route,
    )
