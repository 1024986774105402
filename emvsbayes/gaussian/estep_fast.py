"""The fast route of the Gaussian E-step: blocks, threads, BLAS limits, relative scores, scratch buffers.

:mod:`emvsbayes.gaussian.em` defines the E-step (responsibilities and the responsibility-weighted sums
of each structure's design, :mod:`emvsbayes.gaussian.structures`); this module computes it fast. It is
an implementation detail: tests hold it equal to the plain definition (per-component log-densities,
``logsumexp``, weighted sums) to 1e-12 for every structure (tests/test_gaussian_estep_fast.py).

How the work is laid out, and why:

- **Quadratic features.** log(w_k N(z | mu_k, Sigma_k)) is a quadratic in z, so for a chunk of rows it
  is one matrix product of the design ``[1, z, z_i z_j (i <= j)]`` (F, n) with per-component
  coefficients (K, F); ``diag`` needs only ``[1, z, z^2]`` and ``spherical`` ``[1, z, |z|^2]``;
  ``tied`` shares its quadratic term, so it takes ``[1, z]`` plus one common ``|U^T z|^2``. The
  M-step's sufficient statistics are the responsibility-weighted sums of the same design, one more
  product ``resp (K, n) @ design.T``. Both happen in the E-step's single pass, so an iteration reads
  the data once and the M-step is O(K D^3).
- **The centred route.** A component too tight for the expanded quadratic is scored and its moments
  taken from z - mu_k directly (:class:`Exact`).
- **Scores relative to component 0.** Responsibilities depend only on differences of log-joints, so
  where that is exact the product forms log-joint_k - log-joint_0 for k >= 1 (one row fewer, no shift
  by the largest when all are moderate) and component 0's log-joint is added back summed
  (:class:`Scoring`).
- **Chunks, feature-major.** Data are held as (D, N) and processed in column blocks small enough to stay
  in cache: the peak memory beyond the data is the N x K responsibilities, and reductions over K run
  across contiguous rows instead of along short rows.
- **The fused kernel.** For full covariances the soft E-step is one compiled pass per row instead
  (:mod:`emvsbayes.gaussian.fused`, numba: whitened scores, a vectorised exp, responsibilities and the
  weighted sums while the row is in cache), unless a component is dead or on the centred route; the
  numpy route below stays for the other structures, hard EM and those cases, and as its tests' reference.
- **Threads.** Large data's blocks are spread over one thread per core, with BLAS held at one thread
  for the whole fit (:class:`OneBlasThread`). Blocks are fixed by N and their sums added in block
  order, so the result is the same to the last bit whatever the number of threads.

Functions take the model (``covariance_type``, ``n_components``), the prepared data
(:class:`emvsbayes.gaussian.em.GaussianData`: ``z_t`` (D, N), ``frame``, ``chunk_size``) and the
parameters in original units.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from threadpoolctl import ThreadpoolController

from emvsbayes.gaussian import fused_unrolled
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams
from emvsbayes.gaussian.structures import STRUCTURES, upper_triangle

if TYPE_CHECKING:  # annotations only: em imports this module
    from emvsbayes.gaussian.em import GaussianData

LOG_2PI = math.log(2 * math.pi)


# log of a responsibility relative to the largest one below which it is flushed to zero (see
# soft_assign); e^-700 ~ 1e-304, still a normal float after division by up to K terms.
_NEGLIGIBLE_LOG = -700.0

_AVAILABLE_CORES = max(1, len(os.sched_getaffinity(0)))

# Rows per block are chosen so one block's design and (K, n) work arrays take about this many float64
# values (4 MB): large enough that the per-block Python overhead is a few percent, and that each numpy
# operation on a block takes 0.1 ms or more, which threads need: a thread waiting for the GIL is woken
# too late to catch another thread's shorter operations (measured: on blocks of 1e4 rows, two threads
# ran one after the other).
CHUNK_VALUES = 1 << 19

# The E-step runs on several threads only with at least this many blocks per thread. Data too small
# for two threads of large blocks get blocks half as large, nearer a core's L2 cache: at N = 1e5,
# D = 2, K = 3, on one thread, an iteration took 30% less than on two threads in large blocks. (A rule
# of N, D and K alone, never of the machine: blocks fix the result to the last bit.)
MIN_BLOCKS_PER_THREAD = 8

# Rows per block of the transposing copy: numpy's own transposing copy strides through all of x for
# each feature; through blocks that stay in cache it is 4x faster at N = 1e6, D = 10.
TRANSPOSE_ROWS = 4096


def transposed(x: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``x.T``."""
    out = np.empty(x.shape[::-1])
    for start in range(0, x.shape[0], TRANSPOSE_ROWS):
        out[:, start : start + TRANSPOSE_ROWS] = x[start : start + TRANSPOSE_ROWS].T
    return out


def chunk_size_for(covariance_type: str, n_samples: int, n_features: int, n_components: int) -> int:
    """Rows per block for data of this shape: a rule of N, D and K alone, never of the machine (blocks
    fix the result to the last bit)."""
    n_design = STRUCTURES[covariance_type].n_design(n_features)
    chunk_size = max(256, CHUNK_VALUES // (n_design + 3 * n_components + n_features))
    if n_samples < 2 * MIN_BLOCKS_PER_THREAD * chunk_size:
        chunk_size = max(256, chunk_size // 2)
    return int(chunk_size)


# --------------------------------------------------------------------------------------------------
# Scoring by the expanded quadratic, and the centred route for tight components


class Exact(NamedTuple):
    """What the centred route needs for components too tight for the expanded quadratic.

    Expanding (z - mu)^T P (z - mu) into [1, z, z z^T] terms costs about eps * trace(P_z) * |z|^2 of
    absolute accuracy per point: nothing for components about as wide as the data, but a component
    collapsing onto a few points (trace(P_z) of 1e6 and more) would get log-densities wrong by 1e-9,
    enough for the log-likelihood to seem to fall. Those components (``tight``, usually none) are
    recomputed as base_k - 1/2 |U_k^T (z - mu_k)|^2. Per component: ``mu_z`` (K, D), ``u_z`` (K, ...) the
    precision factors as the structure's ``whiten`` takes them, ``base`` (K,) log w_k + log det U_k -
    D/2 log 2 pi.
    """

    tight: np.ndarray
    mu_z: np.ndarray
    u_z: np.ndarray
    base: np.ndarray


# trace(P_z) above which a component takes the centred route. The expansion's error per point is about
# 1e-15 x trace(P_z) for standardised data (measured), so this keeps it below about 1e-11: far below
# the log-likelihood's own rounding over N points and the loop's monotonicity test. A threshold of 1e3
# (errors below 1e-12) sent two of the eight components of the D = 10, K = 8 benchmark this route and
# took 1.6x the time per iteration.
TIGHT_TRACE = 1e4


def _exact(log_w, log_det, mu_z, factors, trace_prec) -> Exact:
    base = log_w + log_det - 0.5 * mu_z.shape[1] * LOG_2PI
    tight = np.flatnonzero(trace_prec > TIGHT_TRACE)
    return Exact(tight, mu_z, factors, base)


def _constant(log_w, log_det, mu_z, b) -> np.ndarray:
    # log w_k + log det U_k - D/2 log 2 pi - 1/2 mu_k^T P_k mu_k
    return log_w + log_det - 0.5 * mu_z.shape[1] * LOG_2PI - 0.5 * np.sum(mu_z * b, axis=1)


def _coefficients_full(log_w, mu_z, u):
    d = mu_z.shape[1]
    prec = u @ np.swapaxes(u, 1, 2)
    b = np.einsum("kij,kj->ki", prec, mu_z)
    log_det = np.log(np.diagonal(u, axis1=1, axis2=2)).sum(axis=1)
    iu, ju = upper_triangle(d)
    # z^T P z = sum_i P_ii z_i^2 + 2 sum_{i<j} P_ij z_i z_j
    quad = -np.where(iu == ju, 0.5, 1.0) * prec[:, iu, ju]
    coef = np.column_stack([_constant(log_w, log_det, mu_z, b), b, quad])
    # U_k^T, the left factor of the whitening product.
    return coef, _exact(log_w, log_det, mu_z, np.swapaxes(u, 1, 2), np.trace(prec, axis1=1, axis2=2))


def _coefficients_tied(log_w, mu_z, u):
    prec = u @ u.T
    b = mu_z @ prec
    log_det = np.log(np.diagonal(u)).sum()
    coef = np.column_stack([_constant(log_w, log_det, mu_z, b), b])
    # U^T for every component: the shared factor.
    factors = np.broadcast_to(u.T, (len(log_w), *u.shape))
    return coef, _exact(log_w, log_det, mu_z, factors, np.full(len(log_w), np.trace(prec)))


def _coefficients_diag(log_w, mu_z, u):
    prec = np.square(u)
    b = prec * mu_z
    log_det = np.log(u).sum(axis=1)
    coef = np.column_stack([_constant(log_w, log_det, mu_z, b), b, -0.5 * prec])
    return coef, _exact(log_w, log_det, mu_z, u[:, :, None], prec.sum(axis=1))


def _coefficients_spherical(log_w, mu_z, u):
    prec = np.square(u)
    b = prec[:, None] * mu_z
    log_det = mu_z.shape[1] * np.log(u)
    coef = np.column_stack([_constant(log_w, log_det, mu_z, b), b, -0.5 * prec])
    return coef, _exact(log_w, log_det, mu_z, u[:, None, None], mu_z.shape[1] * prec)


# U_k^T y for y = z - mu_k (D, n), into out (D, n), with a component's factor from Exact.u_z: U_k^T
# (D, D) for full and tied, (D, 1) and (1, 1) for diag and spherical.
def _whiten_product(u, y, out):
    np.matmul(u, y, out=out)


def _whiten_elementwise(u, y, out):
    np.multiply(y, u, out=out)


class _TightWork:
    """Scratch for the centred route, one set per thread (see :func:`chunks` for why blocks allocate
    nothing): ``centred`` z - mu_k and ``product`` a product of it, both (D, width).

    One component at a time, not all T in each array operation: arrays (T, D, width) spill out of the
    core's cache, and measured, the centred route then took 1.6x as long on one thread and 1.2x on two.
    """

    def __init__(self, d: int, width: int):
        self.centred = np.empty((d, width))
        self.product = np.empty((d, width))

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.centred[:, :n], self.product[:, :n]


def _recompute_tight(out, exact: Exact, z, whiten, work: _TightWork) -> None:
    """Rows ``exact.tight`` of the log-joint ``out`` (K, n) as base_k - 1/2 |U_k^T (z - mu_k)|^2."""
    if not exact.tight.size:
        return
    centred, white = work.take(z.shape[1])
    minus_half = np.full(z.shape[0], -0.5)
    for k in exact.tight:
        np.subtract(z, exact.mu_z[k][:, None], out=centred)
        whiten(exact.u_z[k], centred, white)
        # -1/2 sum_d white_d^2 as a BLAS product (faster than einsum, and it releases the GIL).
        np.dot(minus_half, np.square(white, out=white), out=out[k])
        out[k] += exact.base[k]


def _log_joint_product(coef, exact, phi, z, out):
    return np.matmul(coef, phi, out=out)


def _log_joint_tied(coef, exact, phi, z, out):
    # The quadratic term -1/2 |U^T z|^2 is the same for every component: computed once, not K times.
    # (Every row of exact.u_z is the shared U^T, see _coefficients_tied.)
    white = exact.u_z[0] @ z
    np.matmul(coef, phi, out=out)
    out -= 0.5 * np.einsum("dn,dn->n", white, white)
    return out


# The weighted sums of design rows 1.. of a shifted component's centred points y = z - shift_k (D, n)
# with its responsibilities r (n,), into out (F - 1,); ``work`` is (D, n) scratch. Formed from y
# directly rather than from its design: for full at D = 10, two BLAS products instead of 55 quadratic
# design rows per component, 2.5x faster. np.dot, not np.matmul: numpy's matmul releases the GIL only
# for a large enough output, and measured, the E-step's threads took turns at these products.
def _centred_sums_full(y, r, work, out):
    d = y.shape[0]
    out[:d] = np.dot(y, r)
    np.multiply(y, r, out=work)
    out[d:] = np.dot(work, y.T)[upper_triangle(d)]


def _centred_sums_diag(y, r, work, out):
    d = y.shape[0]
    out[:d] = np.dot(y, r)
    out[d:] = np.dot(np.square(y, out=work), r)


def _centred_sums_spherical(y, r, work, out):
    d = y.shape[0]
    out[:d] = np.dot(y, r)
    squared_norm = work[0]
    np.einsum("dn,dn->n", y, y, out=squared_norm)
    out[d] = np.dot(squared_norm, r)


class Quadratic(NamedTuple):
    """How a structure's log-joint is scored on the fast route.

    coefficients(log_w, mu_z, u_z) -> (coef (K, F), :class:`Exact`); log_joint(coef, exact, phi, z, out)
    -> (K, n) by the expanded quadratic on the structure's design ``phi``; whiten(u, y (D, n), out
    (D, n)): U_k^T y for a component of the centred route; centred_sums(y, r, work, out): the weighted
    sums (F - 1,) of design rows 1.. of y = z - shift_k for a shifted component (None for tied, whose
    moments are never shifted).
    """

    coefficients: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, Any]]
    log_joint: Callable[[np.ndarray, Any, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    whiten: Callable[[np.ndarray, np.ndarray, np.ndarray], None]
    centred_sums: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None] | None


QUADRATIC: dict[str, Quadratic] = {
    "full": Quadratic(_coefficients_full, _log_joint_product, _whiten_product, _centred_sums_full),
    "tied": Quadratic(_coefficients_tied, _log_joint_tied, _whiten_product, None),
    "diag": Quadratic(_coefficients_diag, _log_joint_product, _whiten_elementwise, _centred_sums_diag),
    "spherical": Quadratic(_coefficients_spherical, _log_joint_product, _whiten_elementwise,
                           _centred_sums_spherical),
}


# --------------------------------------------------------------------------------------------------
# The passes over the data


def chunk_bounds(data: GaussianData) -> list[tuple[int, int]]:
    """The (start, stop) row ranges of the blocks: fixed by N and the chunk size alone, never by the
    number of threads, so every sum over blocks is the same whichever thread computed which block."""
    n, size = data.n_samples, data.chunk_size
    return [(start, min(start + size, n)) for start in range(0, n, size)]


class Scoring(NamedTuple):
    """How :func:`chunks` scores each point against each component.

    ``coef`` (rows, F) multiplies the design; ``extra`` is what the centred route needs (see
    :class:`Exact`); ``dead`` the components of weight 0 (scored -inf). With ``reference`` None the
    scores are the log-joints log w_k + log N(z | mu_k, Sigma_k). Otherwise they are relative to
    component 0: s_k = log-joint_k - log-joint_0, so s_0 = 0 without computing it, ``coef`` holds the
    differences for components 1..K-1 and ``reference`` (F,) component 0's own coefficients, for the
    caller to add back sum_i log-joint_0(z_i) = reference . sum_i phi_i.
    """

    coef: np.ndarray
    extra: Any
    dead: np.ndarray
    reference: np.ndarray | None


def scoring_for(model: GaussianMixtureModel, data: GaussianData, params: GaussianParams) -> Scoring:
    """Log-joint scoring for ``params``."""
    mu_z, u_z = data.frame.params_to_z(params)
    # A component emptied by hard EM has weight 0. Its log weight -inf is kept out of the matrix
    # product (BLAS kernels may form 0 * inf = nan in padding) and put in afterwards.
    dead = params.w <= 0
    coef, extra = QUADRATIC[model.covariance_type].coefficients(np.log(np.where(dead, 1.0, params.w)), mu_z, u_z)
    return Scoring(coef, extra, np.flatnonzero(dead), None)


# Structures whose scores can be relative to component 0: those whose log-joint is the design product
# alone. (tied's shared quadratic term cancels from the differences, but adding back component 0's
# sum would need it per point: not done.)
RELATIVE_FORMS = frozenset({"full", "diag", "spherical"})


def relative_scoring(model: GaussianMixtureModel, scoring: Scoring) -> Scoring:
    """``scoring`` relative to component 0 where that is exact and pays (see :class:`Scoring`), else
    ``scoring`` itself.

    Why: a point's responsibilities and its log p(z) - log-joint_0(z) depend only on the differences,
    so component 0's row is never formed (at K = 3 a third less matrix product and exponentials), and
    when every difference is moderate no shift by the largest is needed either (see
    :func:`soft_assign`). Not with a component on the centred route (its exact row is a log-joint, not
    a difference) nor with a dead one (-inf is not a moderate difference), and not for K = 1.
    """
    if (model.covariance_type not in RELATIVE_FORMS or len(scoring.coef) < 2 or scoring.dead.size
            or scoring.extra.tight.size):
        return scoring
    reference = scoring.coef[0]
    return scoring._replace(coef=scoring.coef[1:] - reference, reference=reference)


def chunks(
    model: GaussianMixtureModel,
    data: GaussianData,
    scoring: Scoring,
    bounds: list[tuple[int, int]] | None = None,
    tight_work: _TightWork | None = None,
) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (rows, z (D, n), design (F, n), scores (K, n)) block by block (all blocks, or those of
    ``bounds``), scored as ``scoring`` says (:func:`scoring_for`: the log-joints log w_k + log N(z | mu_k,
    Sigma_k)). The centred route (see :class:`Exact`) works in ``tight_work`` (its
    own if None), free again for the consumer once a block is yielded.

    The buffers are reused between blocks: a consumer must be done with them before the next one.
    Each call has its own buffers, so threads can each run one over different blocks.
    Reusing them matters beyond allocation: a fresh array of this size is fresh memory the kernel must
    fault in and zero, and page faults of two threads serialise on the process's memory map (measured:
    4x slower per block than the arithmetic, and two threads no faster than one).
    """
    structure = STRUCTURES[model.covariance_type]
    quadratic = QUADRATIC[model.covariance_type]
    coef, extra, dead, reference = scoring
    relative = reference is not None
    bounds = chunk_bounds(data) if bounds is None else bounds
    if not bounds:
        return
    width = max(stop - start for start, stop in bounds)
    buffer = np.empty((coef.shape[1], width))
    buffer[0] = 1.0
    scores_buffer = np.empty((len(coef) + relative, width))
    if tight_work is None and extra.tight.size:
        tight_work = _TightWork(data.n_features, width)
    for start, stop in bounds:
        rows = slice(start, stop)
        z = data.z_t[:, rows]
        phi = buffer[:, : z.shape[1]]
        structure.design(z, phi)
        scores = scores_buffer[:, : z.shape[1]]
        if relative:
            scores[0] = 0.0  # every block: the consumer may have overwritten it
        quadratic.log_joint(coef, extra, phi, z, scores[relative:])
        _recompute_tight(scores, extra, z, quadratic.whiten, tight_work)
        if dead.size:
            scores[dead] = -np.inf
        yield rows, z, phi, scores


class OneBlasThread:
    """Context manager: BLAS limited to one thread while any fit or E-step of the process runs.

    An E-step runs one thread per core (:func:`e_step_threads`), each calling BLAS on cache-sized blocks;
    OpenBLAS's own threads on top of them oversubscribe the cores, and for these shapes even alone they
    are slower than one thread (measured at N = 1e6, D = 10, K = 8: an iteration 2.3x slower). A fit
    holds the limit from start to end, not only during its E-steps: the M-step's small BLAS calls in
    between otherwise woke OpenBLAS's threads, which then spun into the next E-step (measured at
    N = 1e7, D = 2, K = 3: iterations 25% slower). Nested and concurrent holders (E-steps inside a
    fit, fits in several of the caller's threads) share one limit: the setting found by the first is
    restored by the last. threadpoolctl's controller scans the loaded libraries, once per process (a
    millisecond); setting and restoring the limit then costs about 10 us.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._active = 0
        self._limiter = None

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._limiter = _blas_controller().limit(limits=1, user_api="blas")
            self._active += 1

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._limiter.restore_original_limits()
                self._limiter = None


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


@functools.cache
def _worker_pool(n_workers: int) -> ThreadPoolExecutor:
    """Threads kept for the E-steps of the process: starting and joining them in every E-step cost
    0.2 ms, 4% of an iteration at N = 1e5."""
    return ThreadPoolExecutor(n_workers, thread_name_prefix="emvsbayes-e-step")


ONE_BLAS_THREAD = OneBlasThread()


def _after_fork_in_child() -> None:
    # A forked child has the pool objects but not their threads, and may have the limit's lock held
    # by a thread that does not exist there: it starts afresh.
    global ONE_BLAS_THREAD
    _worker_pool.cache_clear()
    ONE_BLAS_THREAD = OneBlasThread()


os.register_at_fork(after_in_child=_after_fork_in_child)


def e_step_threads(data: GaussianData) -> int:
    """Threads an E-step uses: one per available core, but only with at least ``MIN_BLOCKS_PER_THREAD``
    blocks per thread (numpy releases the GIL inside its array loops, so blocks run truly in parallel)."""
    return max(1, min(_AVAILABLE_CORES, len(chunk_bounds(data)) // MIN_BLOCKS_PER_THREAD))


def _stripes(bounds: list, n_threads: int) -> list[list]:
    """``bounds`` cut into ``n_threads`` contiguous runs of (nearly) equal length."""
    if n_threads == 1:  # every E-step of small data (one block): np.array_split costs more than the block
        return [list(range(len(bounds)))]
    return [list(part) for part in np.array_split(np.arange(len(bounds)), n_threads) if part.size]


class _AssignWork:
    """Scratch arrays for assigning one block (one set per thread), so the per-block passes allocate
    nothing (see :func:`chunks` for why that matters)."""

    def __init__(self, k: int, width: int):
        self.shift = np.empty(width)
        self.total = np.empty(width)
        self.kept = np.empty((k, width), dtype=bool)
        self.centred = np.empty((k, width))

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.shift[:n], self.total[:n], self.kept[:, :n], self.centred[:, :n]


def soft_assign(
    scores: np.ndarray, out: np.ndarray | None, work: _AssignWork | None = None, *, first_is_zero: bool = False
) -> tuple[np.ndarray, float]:
    """Log responsibilities into ``out`` (K, n) (none if ``out`` is None); return (responsibilities
    (K, n), sum_i log sum_k e^scores_ki).

    ``scores`` are the log-joints, or anything differing from them by a term per point (the
    responsibilities are the same; the objective differs by the sum of those terms). With
    ``first_is_zero`` row 0 is known to be 0 (scores relative to component 0, see :class:`Scoring`).

    This is logsumexp over K (shift by the largest term, exponentiate, sum, log), written out instead
    of calling ``scipy.special.logsumexp``: that function makes about fifteen passes with fancy
    indexing (it was 80% of an iteration), and here the shifted exponentials it throws away are the
    unnormalised responsibilities the M-step needs. Tests check the result against
    ``scipy.special.logsumexp``. ``scores`` is overwritten.
    """
    work = work or _AssignWork(*scores.shape)
    shift, total, kept, centred = work.take(scores.shape[1])
    free = scores[1:] if first_is_zero else scores
    # Two reads decide whether the shift can be skipped (see _assign_unshifted).
    if free.size and -UNSHIFTED_RANGE <= free.min() and free.max() <= UNSHIFTED_RANGE:
        return _assign_unshifted(scores, out, total, first_is_zero)
    centred = centred if out is None else out
    _over_rows(np.maximum, scores, shift)
    np.subtract(scores, shift, out=centred)
    # Terms below e^-700 of the largest are zero to every digit of the sums, but as subnormal numbers
    # they make each product in the M-step's matrix product take a microcode assist (10x slower), so
    # they are set to 0. Nor are they exponentiated: numpy's vectorised exp takes a slow path for
    # results that underflow (measured: 100x per value when subnormal, 5x when 0), which made a block
    # with a narrow component far from most points 8x slower to exponentiate. So the exponent is
    # clipped at e^-700 and the clipped terms multiplied by 0. Most blocks have none: one read finds out.
    if centred.min() < _NEGLIGIBLE_LOG:
        scaled = np.exp(np.maximum(centred, _NEGLIGIBLE_LOG, out=scores), out=scores)
        scaled *= np.greater_equal(centred, _NEGLIGIBLE_LOG, out=kept)
    else:
        scaled = np.exp(centred, out=scores)
    _over_rows(np.add, scaled, total)
    scaled /= total
    log_total = np.log(total, out=total)
    if out is not None:
        out -= log_total
    log_total += shift
    return scaled, float(log_total.sum())


# Scores all within +-UNSHIFTED_RANGE need no shift: their exponentials neither overflow nor
# underflow, and each responsibility e^s_k / sum_j e^s_j stays above e^-2 UNSHIFTED_RANGE / K, a
# normal float (see soft_assign for why subnormals must not reach the M-step).
UNSHIFTED_RANGE = 350.0


def _assign_unshifted(scores, out, total, first_is_zero) -> tuple[np.ndarray, float]:
    """:func:`soft_assign` for scores within +-``UNSHIFTED_RANGE``: exponentiated as they are, which
    saves the pass for the largest and the one subtracting it; with ``first_is_zero``, row 0's
    exponential is 1 and its responsibility 1 / total."""
    if out is not None:
        np.copyto(out, scores)
    if first_is_zero:
        free = np.exp(scores[1:], out=scores[1:])
        np.add(free[0], 1.0, out=total)
        for row in free[1:]:
            total += row
        np.divide(1.0, total, out=scores[0])
        free *= scores[0]
    else:
        np.exp(scores, out=scores)
        _over_rows(np.add, scores, total)
        scores /= total
    log_total = np.log(total, out=total)
    if out is not None:
        out -= log_total
    return scores, float(log_total.sum())


def _over_rows(ufunc, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``ufunc.reduce(rows, axis=0)`` into ``out`` as K - 1 whole-row operations, the same additions in
    the same order: for the few rows of a (K, n) block about twice as fast as numpy's reduction along
    the outer axis (measured for sums and maxima at K = 3)."""
    if len(rows) == 1:
        np.copyto(out, rows[0])
        return out
    ufunc(rows[0], rows[1], out=out)
    for row in rows[2:]:
        ufunc(out, row, out=out)
    return out


def hard_assign(
    log_joint: np.ndarray, out: np.ndarray | None, work: _AssignWork | None = None, *, first_is_zero: bool = False
) -> tuple[np.ndarray, float]:
    """Each point wholly to its most probable component (ties to the lowest index): 0 / -inf into
    ``out`` (unless None); return (one-hot responsibilities (K, n), sum_i max_k log(w_k N(z_i | ...))),
    the classification log-likelihood, for scores that are log-joints (or differ from them by a term per
    point, which the objective then differs by; ``first_is_zero`` is not needed). ``log_joint`` is
    overwritten."""
    best = np.argmax(log_joint, axis=0)
    cols = np.arange(log_joint.shape[1])
    objective = float(log_joint[best, cols].sum())
    if out is not None:
        out.fill(-np.inf)
        out[best, cols] = 0.0
    log_joint.fill(0.0)
    log_joint[best, cols] = 1.0
    return log_joint, objective


def shifted(model: GaussianMixtureModel, exact: Exact) -> tuple[np.ndarray, np.ndarray]:
    """(components whose moments are taken about their current mean, the shift (K, D)): those on the
    centred route (``exact`` of the E-step's scoring), about their means.

    E[z z^T] - mu mu^T has the same eps * trace(P_z) trouble as the expanded log-density: for a
    collapsing component its rounding is a noticeable fraction of reg_covar and can lower the
    log-likelihood. Moments about a point near the mean do not cancel. Not for ``tied``, whose
    M-step uses the total second moment of the data.
    """
    shift = np.zeros_like(exact.mu_z)
    if not STRUCTURES[model.covariance_type].shifts_moments:
        return np.empty(0, dtype=np.intp), shift
    shift[exact.tight] = exact.mu_z[exact.tight]
    return exact.tight, shift


# Structures whose soft E-step runs as one compiled pass (emvsbayes.gaussian.fused), when no component is
# dead (weight 0) or takes its moments about its mean (see shifted), and where it pays (fused_pays).
FUSED_FORMS = frozenset({"full"})
# Features up to which the fused pass is taken (see fused_pays): measured to pay up to D = 10 (without
# numpy's AVX-512 exp, CPU time per iteration 0.81x the numpy route's at D = 10, K = 8); not measured above.
FUSED_MAX_FEATURES = 10


@functools.cache
def numpy_exp_is_avx512() -> bool:
    """Whether numpy runs float64 exp and log in its AVX-512 loops here (its dispatch target AVX512_SKX; off
    on CPUs without AVX-512 and under NPY_DISABLE_CPU_FEATURES)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # a numpy that moved it: assume the fast loops, the numpy route then
        return True
    return bool(__cpu_features__.get("AVX512_SKX", False))


def fused_pays(model: GaussianMixtureModel, data: GaussianData) -> bool:
    """Whether the soft E-step takes the fused kernel: a structure it covers, at most FUSED_MAX_FEATURES
    features, and either a numpy without its AVX-512 exp or data large enough for the kernel generated per
    (D, K) (:func:`emvsbayes.gaussian.fused_unrolled.pays`).

    Measured (CPU time, 2026-12-03, one machine, under load; benchmarks/README.md): where numpy has its
    AVX-512 exp the numpy route is as fast as the generic kernel or faster (0.98-1.36x its time for
    D = 1 .. 10: BLAS's products beat the generic kernel's loops), but the generated kernels, with the whole
    row in registers, take about half its time (N = 1e7, CPU per iteration: D = 2, K = 3 59-60 ms against
    133 ms; D = 10, K = 8 about 1.3 s of E-step against 2.1 s). Without
    it numpy's exp is scalar libm code, 20x slower than the kernels', and either kernel wins. A rule of the
    machine, not only of N, D and K: the routes agree to rounding, not to the bit.
    """
    if model.covariance_type not in FUSED_FORMS or data.n_features > FUSED_MAX_FEATURES:
        return False
    return not numpy_exp_is_avx512() or fused_unrolled.pays(data.n_features, model.n_components, data.n_samples)


def weighted_sums(assign, model, data, params: GaussianParams, keep_log_resp: bool):
    """One pass over the data at ``params``: each block scored, assigned by ``assign``
    (:func:`soft_assign` or :func:`hard_assign`) and its design summed with the responsibilities.

    Returns (sums (F, K): the responsibility-weighted sums of the structure's design, shift (K, D): the
    point each component's moments are taken about (see :func:`shifted`), log responsibilities (K, N)
    or None unless ``keep_log_resp``, objective in standardised coordinates (soft: sum_i log p(z_i);
    hard: the classification log-likelihood)).
    """
    k = params.w.shape[0]
    structure = STRUCTURES[model.covariance_type]
    quadratic = QUADRATIC[model.covariance_type]
    scoring = scoring_for(model, data, params)
    tight, shift = shifted(model, scoring.extra)
    # Components on the centred route: only the kernel generated per (D, K) takes their moments about their
    # means (a tight component appears as EM closes in on a narrow cluster: at D = 10, K = 8 from the fourth
    # iteration of the benchmark on, which then ran the numpy route at 3x the cost).
    centred_ok = not tight.size or fused_unrolled.pays(data.n_features, k, data.n_samples)
    if assign is soft_assign and fused_pays(model, data) and not scoring.dead.size and centred_ok:
        # One compiled pass per row (emvsbayes.gaussian.fused): the same sums to rounding.
        from emvsbayes.gaussian import fused  # here: numba is imported only where it is used

        extra = scoring.extra
        sums, log_resp_t, objective = fused.soft_full_sums(data.z_t, extra.mu_z, extra.u_z, extra.base, keep_log_resp,
                                                           shift if tight.size else None)
        return sums, shift, log_resp_t, objective
    scoring = relative_scoring(model, scoring)
    reference = scoring.reference
    # (K, N) so each block is a contiguous column range and the reduction over K runs across rows;
    # the stats expose its transpose (N, K).
    log_resp_t = np.empty((k, data.n_samples)) if keep_log_resp else None
    bounds = chunk_bounds(data)
    # One slot per block for its weighted sums and objective; they are added up in block order after
    # all blocks are done, so the result does not depend on how many threads ran.
    block_sums = np.empty((len(bounds), structure.n_design(data.n_features), k))
    objectives = np.empty(len(bounds))

    def run(indices: list[int]) -> None:
        width = max(bounds[i][1] - bounds[i][0] for i in indices)
        work = _AssignWork(k, width)
        tight_work = _TightWork(data.n_features, width)
        blocks = chunks(model, data, scoring, [bounds[i] for i in indices], tight_work)
        for index, (rows, z, phi, scores) in zip(indices, blocks):
            resp, objectives[index] = assign(scores, log_resp_t[:, rows] if keep_log_resp else None, work,
                                             first_is_zero=reference is not None)
            block = block_sums[index]
            # np.dot, not np.matmul: see _centred_sums_full.
            np.dot(phi, resp.T, out=block)
            if reference is not None:
                # Scores relative to component 0 leave out sum_i log-joint_0(z_i) = reference . sum_i
                # phi_i, and sum_i phi_i is the block's weighted sums added over components (each
                # point's responsibilities sum to 1), taken before the shifted moments replace any.
                objectives[index] += reference @ block.sum(axis=1)
            centred, product = tight_work.take(z.shape[1])
            for j in tight:
                # Row 0 (the count) does not depend on the shift: only the moments are redone.
                np.subtract(z, shift[j][:, None], out=centred)
                quadratic.centred_sums(centred, resp[j], product, block[1:, j])

    stripes = _stripes(bounds, e_step_threads(data))
    with ONE_BLAS_THREAD:
        if len(stripes) == 1:
            run(stripes[0])
        else:
            # The calling thread takes the first stripe; the pool's threads the others.
            pending = [_worker_pool(len(stripes) - 1).submit(run, stripe) for stripe in stripes[1:]]
            try:
                run(stripes[0])
            finally:
                wait(pending)
            for done in pending:
                done.result()
    sums = block_sums[0].copy()
    for block in block_sums[1:]:
        sums += block
    return sums, shift, log_resp_t, math.fsum(objectives)
