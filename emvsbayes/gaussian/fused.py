"""The soft E-step of full-covariance Gaussian mixtures as one compiled pass per row (numba).

Why a compiled kernel: the numpy route (:mod:`emvsbayes.gaussian.estep_fast`) makes about ten passes
over each block (design, score product, range check, exp, sums, reciprocal, scaling, log, weighted-sums
product), and numpy's float64 ``exp`` is scalar libm code on a CPU without AVX-512 (3 ns per value against
0.7 with it). At N = 1e7, D = 2, K = 3 that put an iteration at 8-17x the memory-bandwidth floor; issue 21
asks for 3x. Here each block of rows is read once and everything happens while it is in cache:

1. per component, the whitened residual y = U_k^T (z - mu_k) (U_k the precision's Cholesky factor) and
   the score s_k = log w_k + log det U_k - D/2 log 2 pi - |y|^2 / 2 (no expanded quadratic, so no
   cancellation for narrow components);
2. per row the largest score m, e_k = exp(s_k - m) (:func:`exp_le0`, a vectorisable exp), the
   total, the responsibilities e_k / total, and log p(z) = m + log(total);
3. the responsibility-weighted sums of the design [1, z, z_a z_b (a <= b)], the M-step's statistics.

Every inner loop runs along the rows of a block (the data are feature-major, (D, N)), so LLVM vectorises
them; the exponential is written out as arithmetic (a library call would stop that). The log of the
totals is taken once per group of rows, as the log of their product (each total lies in [1, K], so a
group of G rows with K^G < 2^1000 cannot overflow): one libm call per group instead of per row.

Determinism: blocks are fixed by N alone (:data:`BLOCK_ROWS`); each block's sums go to its own slot and
the slots are added in block order after the parallel loop, so the result is the same to the last bit
whatever the number of threads. Within a block the sums are vectorised reductions (``fastmath`` allows
reassociation there and only there), fixed by the compiled code.

Two kernels: the generic one here (any D and K; its loops along a block's rows are load/store-bound), and
from :data:`fused_unrolled.MIN_ROWS` rows on, one generated for the (D, K) with the whole row in registers
(:mod:`emvsbayes.gaussian.fused_unrolled`, 1.3-3x faster; :func:`kernels_for`). Both give the numpy
route's results to rounding.

Not here (the numpy route does them): hard EM, the other structures, components of weight 0, and
components so narrow that their moments are taken about their mean (``estep_fast.shifted``). Nor where the
numpy route is faster: with numpy's AVX-512 exp the generic kernel (8-lane exp, and BLAS's register-blocked
products beat its load/store-bound loops), nor above ``estep_fast.FUSED_MAX_FEATURES`` features, where it
was not measured (``estep_fast.fused_pays``, with the measurements in benchmarks/README.md).

numba is imported when this module is, and this module only on that route (``estep_fast`` imports it
lazily), so ``import emvsbayes`` stays light.
"""

from __future__ import annotations

import math
import os
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from emvsbayes.gaussian import fused_unrolled

# Rows per block: a block's design ((1 + D + D (D + 1) / 2) x BLOCK_ROWS) and its (K x BLOCK_ROWS) scores
# stay in a core's L2 cache at D = 10, K = 8 (270 kB), and the per-block bookkeeping stays negligible.
BLOCK_ROWS = 512

# exp(x) for x in [EXP_FLOOR, 0]; below it the term is set to 0, as the numpy route flushes terms below
# e^-700 of the largest (subnormal responsibilities would slow the M-step's sums).
EXP_FLOOR = -700.0

_LOG2E = 1.4426950408889634
# ln 2 split so that n * _LN2_HI is exact for |n| < 2048 (its low 32 bits are zero; fdlibm's constants).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# 1.5 * 2^52: adding it rounds a float of magnitude below 2^51 to an integer, held in the low mantissa bits.
_ROUNDER = 6755399441055744.0
_ROUNDER_BITS = int(np.array([_ROUNDER]).view(np.int64)[0])
# 1 / j! for j = 0 .. 13: the Taylor polynomial of e^r on |r| <= ln2 / 2; its remainder r^14 / 14! < 5e-18.
_C = tuple(1.0 / math.factorial(j) for j in range(14))


@intrinsic
def _float_bits(typingctx, x):
    """The bits of a float64 as an int64 (a reinterpretation, no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_float(typingctx, x):
    """The float64 whose bits are the int64 ``x``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


# "contract" (fused multiply-adds) keeps every step exact or correctly rounded once; "reassoc" must never
# reach this function: it would fold (y + _ROUNDER) - _ROUNDER into y and lose the rounding.
@numba.njit(inline="always", fastmath={"contract"})
def exp_le0(x):
    """exp(x) for x <= 0, 0 for x < :data:`EXP_FLOOR`, as arithmetic LLVM can vectorise (a call to libm's
    ``exp`` would keep the loop scalar).

    exp(x) = 2^n e^r with n = round(x / ln 2) (by adding and subtracting 1.5 * 2^52), r = x - n ln 2 (ln 2
    in two parts, so exact), e^r by its Taylor polynomial of degree 13 on |r| <= ln 2 / 2 (remainder below
    5e-18), and 2^n made from the bits of n (no float-to-integer conversion, which AVX2 cannot vectorise).
    Within about 1 ulp of ``np.exp`` (tested on millions of points).
    """
    return _exp_clamped(x) if x >= EXP_FLOOR else 0.0


# exp_bounded's ceiling: scores relative to a reference component up to this are exponentiated as they are
# (the numpy route's UNSHIFTED_RANGE); a total this large (2^504 and more) sends a block to the shifted route.
EXP_CEILING = 350.0


@numba.njit(inline="always", fastmath={"contract"})
def exp_bounded(x):
    """exp(x) for :data:`EXP_FLOOR` <= x <= :data:`EXP_CEILING`, 0 below, exp(EXP_CEILING) above: the
    arithmetic of :func:`exp_le0` (2^n with n up to 505 is still a normal number)."""
    return _exp_clamped(min(x, EXP_CEILING)) if x >= EXP_FLOOR else 0.0


@numba.njit(inline="always", fastmath={"contract"})
def _exp_clamped(xi):
    """exp(xi) for xi already within [EXP_FLOOR, EXP_CEILING]: the arithmetic :func:`exp_le0` describes
    (inlined into its callers, so compiled with their flags)."""
    rounded = xi * _LOG2E + _ROUNDER
    n = rounded - _ROUNDER
    # the low bits of rounded hold n; 2^n has the exponent field n + 1023 (n >= -1010: a normal number)
    scale = _bits_float((_float_bits(rounded) - _ROUNDER_BITS + 1023) << 52)
    r = (xi - n * _LN2_HI) - n * _LN2_LO
    p = _C[13]
    p = p * r + _C[12]
    p = p * r + _C[11]
    p = p * r + _C[10]
    p = p * r + _C[9]
    p = p * r + _C[8]
    p = p * r + _C[7]
    p = p * r + _C[6]
    p = p * r + _C[5]
    p = p * r + _C[4]
    p = p * r + _C[3]
    p = p * r + _C[2]
    p = p * r + _C[1]
    p = p * r + _C[0]
    return p * scale


_MANTISSA_BITS = (1 << 52) - 1
_ONE_BITS = 1023 << 52


@numba.njit(inline="always", fastmath={"contract"})
def mantissa(x):
    """x / 2^floor(log2 x) in [1, 2), for a positive normal x (its bits, no arithmetic: exact)."""
    return _bits_float((_float_bits(x) & _MANTISSA_BITS) | _ONE_BITS)


@numba.njit(inline="always", fastmath={"contract"})
def binary_exponent(x):
    """floor(log2 x) as a float, for a positive normal x: exact, and vectorisable without AVX-512 (no
    integer-to-float conversion: the integer's bits are added to those of 1.5 * 2^52)."""
    return _bits_float((_float_bits(x) >> 52) - 1023 + _ROUNDER_BITS) - _ROUNDER


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def exp_bounded_each(x, out):
    """``out[i] = exp_bounded(x[i])`` (for tests)."""
    for i in range(x.shape[0]):
        out[i] = exp_bounded(x[i])


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def split_each(x, mantissas, exponents):
    """``mantissa`` and ``binary_exponent`` of each x[i] (for tests)."""
    for i in range(x.shape[0]):
        mantissas[i] = mantissa(x[i])
        exponents[i] = binary_exponent(x[i])


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def exp_nonpositive(x, out):
    """``out[i] = exp_le0(x[i])`` (for tests and benchmarks of the exponential alone)."""
    for i in range(x.shape[0]):
        out[i] = exp_le0(x[i])


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _weighted_sums(resp, design, n, out):
    """``out[k, f] = sum_i resp[k, i] design[f, i]`` over the first ``n`` rows; ``out[k, 0]`` the count
    (design row 0 is the ones, not stored). Reassociation lets LLVM vectorise these reductions."""
    n_components, n_design = out.shape
    for k in range(n_components):
        acc = 0.0
        for i in range(n):
            acc += resp[k, i]
        out[k, 0] = acc
        for f in range(1, n_design):
            acc = 0.0
            for i in range(n):
                acc += resp[k, i] * design[f - 1, i]
            out[k, f] = acc


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _row_sum(values, n):
    acc = 0.0
    for i in range(n):
        acc += values[i]
    return acc


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _row_product(values, start, stop):
    acc = 1.0
    for i in range(start, stop):
        acc *= values[i]
    return acc


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _block(z_t, start, n, mu, u_t, base, group_rows, scores, expd, design, total, work, log_resp_t, keep_log_resp,
           sums_out):
    """One block of rows ``start .. start + n``: its weighted sums into ``sums_out`` (K, F); returns its
    sum of log p(z) (standardised coordinates). Scratch arrays are (K or F or 1, BLOCK_ROWS)."""
    n_components, d = mu.shape
    # 1. scores, component by component: base_k - |U_k^T (z - mu_k)|^2 / 2
    for k in range(n_components):
        quad = expd[0]  # scratch row, free until step 2
        acc = expd[1]
        for i in range(n):
            quad[i] = 0.0
        for a in range(d):
            for i in range(n):
                acc[i] = 0.0
            for b in range(a + 1):
                c = u_t[k, a, b]
                m = mu[k, b]
                for i in range(n):
                    acc[i] += c * (z_t[b, start + i] - m)
            for i in range(n):
                quad[i] += acc[i] * acc[i]
        row = scores[k]
        for i in range(n):
            row[i] = base[k] - 0.5 * quad[i]
    # 2. largest score per row, exponentials relative to it, totals, responsibilities
    largest = work
    for i in range(n):
        largest[i] = scores[0, i]
    for k in range(1, n_components):
        for i in range(n):
            largest[i] = max(largest[i], scores[k, i])
    for i in range(n):
        total[i] = 0.0
    for k in range(n_components):
        for i in range(n):
            e = exp_le0(scores[k, i] - largest[i])
            expd[k, i] = e
            total[i] += e
    objective = _row_sum(largest, n)
    g = 0
    while g < n:
        stop = min(n, g + group_rows)
        objective += math.log(_row_product(total, g, stop))
        g = stop
    if keep_log_resp:
        for i in range(n):
            log_total = math.log(total[i])
            for k in range(n_components):
                log_resp_t[k, start + i] = scores[k, i] - largest[i] - log_total
    for i in range(n):
        total[i] = 1.0 / total[i]
    for k in range(n_components):
        for i in range(n):
            expd[k, i] *= total[i]
    # 3. the design [z, z_a z_b (a <= b)] and its responsibility-weighted sums
    for a in range(d):
        for i in range(n):
            design[a, i] = z_t[a, start + i]
    f = d
    for a in range(d):
        for b in range(a, d):
            for i in range(n):
                design[f, i] = z_t[a, start + i] * z_t[b, start + i]
            f += 1
    _weighted_sums(expd, design, n, sums_out)
    return objective


@numba.njit(cache=True, nogil=True)
def _stripe(z_t, mu, u_t, base, block_rows, group_rows, first, last, log_resp_t, keep_log_resp, block_sums,
            objectives):
    """Blocks ``first .. last - 1``, one after the other, with scratch of their own reused across them."""
    n_samples = z_t.shape[1]
    n_components = mu.shape[0]
    scores = np.empty((n_components, block_rows))
    expd = np.empty((max(n_components, 2), block_rows))
    design = np.empty((block_sums.shape[2] - 1, block_rows))
    total = np.empty(block_rows)
    work = np.empty(block_rows)
    for blk in range(first, last):
        start = blk * block_rows
        n = min(block_rows, n_samples - start)
        objectives[blk] = _block(z_t, start, n, mu, u_t, base, group_rows, scores, expd, design, total, work,
                                 log_resp_t, keep_log_resp, block_sums[blk])


@numba.njit(cache=True, parallel=True)
def _all_blocks_parallel(z_t, mu, u_t, base, block_rows, group_rows, n_stripes, log_resp_t, keep_log_resp,
                         block_sums, objectives):
    n_blocks = block_sums.shape[0]
    for stripe in numba.prange(n_stripes):
        _stripe(z_t, mu, u_t, base, block_rows, group_rows, stripe * n_blocks // n_stripes,
                (stripe + 1) * n_blocks // n_stripes, log_resp_t, keep_log_resp, block_sums, objectives)


@numba.njit(cache=True, nogil=True)
def _all_blocks_serial(z_t, mu, u_t, base, block_rows, group_rows, n_stripes, log_resp_t, keep_log_resp,
                       block_sums, objectives):
    _stripe(z_t, mu, u_t, base, block_rows, group_rows, 0, block_sums.shape[0], log_resp_t, keep_log_resp,
            block_sums, objectives)


# One parallel kernel at a time per process; a call from another thread meanwhile (Dask's threads, fits
# run from a caller's threads) takes the serial kernel: the same blocks, so the same result to the bit.
_PARALLEL = threading.Lock()
# numba's OpenMP layer (GNU libgomp) is not fork-safe: a forked child that started a parallel region would
# hang, so a child runs the serial kernel.
_FORKED = False


def _after_fork_in_child() -> None:
    global _FORKED, _PARALLEL
    _FORKED = True
    _PARALLEL = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def group_rows_for(n_components: int) -> int:
    """Rows whose totals (each in [1, K]) are multiplied before one log: K^G stays below 2^1000."""
    return max(1, min(BLOCK_ROWS, int(1000 // math.log2(max(n_components, 2)))))


def _generated(d: int, k: int, n: int, shift: np.ndarray | None) -> bool:
    return shift is not None or (UNROLLED and fused_unrolled.pays(d, k, n))


def kernels_for(d: int, k: int, n: int, shift: np.ndarray | None = None):
    """(parallel, serial) kernels for N rows, D features and K components: generated for this (D, K) where
    :func:`emvsbayes.gaussian.fused_unrolled.pays` and :data:`UNROLLED` is on (the whole row in registers,
    1.3-3x faster), else the generic ones here. Both take the generic kernels' arguments.

    ``shift`` (K, D), if not None: each component's sums taken about its row of it (its moments about its
    mean, for components too narrow for sums about 0: ``estep_fast.shifted``); only the generated kernels
    do that, so they are taken whatever N.
    """
    if _generated(d, k, n, shift):
        module = fused_unrolled.kernels(d, k, BLOCK_ROWS)
        if shift is None:
            about = np.zeros((k, d))
            parallel, serial = module.all_blocks_parallel, module.all_blocks_serial
        else:
            about = np.ascontiguousarray(shift, dtype=np.float64)
            parallel, serial = module.all_blocks_parallel_centred, module.all_blocks_serial_centred
        return (lambda *arguments: parallel(*arguments, about)), (lambda *arguments: serial(*arguments, about))
    return _all_blocks_parallel, _all_blocks_serial


# Whether the kernels generated per (D, K) run where they cover (D, K); off, the generic kernels run
# everywhere (tests compare the two).
UNROLLED = True


def soft_full_sums(z_t: np.ndarray, mu_z: np.ndarray, u_t: np.ndarray, base: np.ndarray, keep_log_resp: bool,
                   shift: np.ndarray | None = None):
    """The soft E-step's sums for full covariances in one compiled pass.

    ``z_t`` (D, N) standardised data; ``mu_z`` (K, D) means, ``u_t`` (K, D, D) the transposed precision
    factors U_k^T (lower triangular) and ``base`` (K,) log w_k + log det U_k - D/2 log 2 pi, all in the
    same coordinates. Returns (sums (F, K) of the design [1, z, z_a z_b (a <= b)] weighted by the
    responsibilities, log responsibilities (K, N) or None, sum_i log p(z_i)). With ``shift`` (K, D) the
    sums of design rows 1.. are of z - shift_k (see :func:`kernels_for`; the generated kernel only).
    """
    z_t = np.ascontiguousarray(z_t, dtype=np.float64)
    d, n = z_t.shape
    k = mu_z.shape[0]
    # The generated kernel scores relative to its first component, and a block where another scores more
    # than EXP_CEILING above it is computed twice: the first is the widest component (smallest trace of its
    # precision), whose scores fall slowest. (At D = 10, K = 8 a component that had tightened sent every
    # block of the benchmark twice through as component 0.)
    order = np.arange(k)
    if _generated(d, k, n, shift) and k > 1:
        widest = int(np.argmin(np.einsum("kab,kab->k", u_t, u_t)))
        order = np.array([widest, *(j for j in range(k) if j != widest)])
        mu_z, u_t, base = mu_z[order], u_t[order], base[order]
        shift = None if shift is None else shift[order]
    n_design = 1 + d + d * (d + 1) // 2
    n_blocks = -(-n // BLOCK_ROWS)
    block_sums = np.empty((n_blocks, k, n_design))
    objectives = np.empty(n_blocks)
    log_resp_t = np.empty((k, n)) if keep_log_resp else np.empty((k, 0))
    arguments = (z_t, np.ascontiguousarray(mu_z, dtype=np.float64), np.ascontiguousarray(u_t, dtype=np.float64),
                 np.ascontiguousarray(base, dtype=np.float64), BLOCK_ROWS, group_rows_for(k))
    outputs = (log_resp_t, keep_log_resp, block_sums, objectives)
    parallel, serial = kernels_for(d, k, n, shift)
    n_stripes = min(numba.get_num_threads(), n_blocks)
    if n_stripes > 1 and not _FORKED and _PARALLEL.acquire(blocking=False):
        try:
            parallel(*arguments, n_stripes, *outputs)
        finally:
            _PARALLEL.release()
    else:
        serial(*arguments, 1, *outputs)
    # Block order, whatever thread did which block: the same sums to the last bit for any thread count.
    # (numpy reduces a leading axis one slice after the other; a loop of slices in Python cost 7 ms of an
    # iteration at N = 1e7, 19,532 blocks.)
    sums = np.empty((k, n_design))
    sums[order] = block_sums.sum(axis=0)
    if keep_log_resp and order[0] != 0:
        log_resp_t[order] = log_resp_t.copy()
    return sums.T, (log_resp_t if keep_log_resp else None), math.fsum(objectives)


__all__ = ["BLOCK_ROWS", "EXP_CEILING", "EXP_FLOOR", "binary_exponent", "exp_bounded", "exp_bounded_each", "exp_le0",
           "exp_nonpositive", "mantissa", "split_each", "group_rows_for", "soft_full_sums"]
