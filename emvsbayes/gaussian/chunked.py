"""EM for a Gaussian mixture on data larger than one machine: a ``dask.array`` chunked by rows.

The E-step of a mixture is a sum over rows: the expected counts n_k, the weighted sums sum_i r_ik z_i and
the weighted second moments (shaped by the covariance structure) of a data set are the sums of those of
its chunks, and so is the log-likelihood. So one EM iteration here is

1. on each worker, for each chunk: the in-memory E-step (:func:`emvsbayes.gaussian.em.e_step`, the same
   function :func:`emvsbayes.gaussian.em.fit` uses) on that chunk alone, in the data set's standardised
   frame, which returns the chunk's statistics: K (1 + D + D^2) numbers at most, whatever the chunk's
   length;
2. a tree reduction of those statistics (``split_every`` at a time), so the driver receives one record;
3. on the driver: the in-memory M-step (:func:`emvsbayes.gaussian.em.m_step`).

The loop, its stopping rule, its trace and its check that the objective never falls are
:func:`emvsbayes.em.fit_em`'s: the chunked E-step is passed to it as any family's E-step is. A worker
holds one chunk and its work arrays at a time (memory bounded by the chunk, not by N); the network
carries the parameters out and the statistics back. The data are read once per iteration (plus twice
at the start, for the standardising frame).

The result equals :func:`emvsbayes.gaussian.em.fit` on the same data loaded into memory to rounding
(tests: 1e-10 relative for every covariance structure, with uneven chunks). Responsibilities (N x K)
are not kept; :func:`log_resp` gives them as a dask array.

Cluster: ``client`` (an open :class:`distributed.Client`), else ``scheduler`` (an address, as
``emvsbayes study --scheduler``), else a ``LocalCluster`` of this machine started and closed here, the
one the studies start (:mod:`emvsbayes.study.run`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import partial

import numpy as np

from emvsbayes.cluster import cluster_client  # re-exported: where a fit without a client gets one
from emvsbayes.em import EMFit, fit_em
from emvsbayes.gaussian.em import (
    E_STEPS,
    Frame,
    GaussianData,
    GaussianStats,
    m_step,
    regularisation_slack,
)
from emvsbayes.gaussian.em import log_resp as in_memory_log_resp
from emvsbayes.gaussian.estep_fast import chunk_size_for
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams

#: Partial results combined per reduction task: with 1e4 chunks, a tree of depth 5.
SPLIT_EVERY = 8


@dataclass(frozen=True, slots=True)
class ChunkStats:
    """The E-step's additive statistics of some rows (one chunk, or several added).

    ``n_rows``; ``nk`` (K,), ``sum_z`` (K, D), ``sum_zz`` (shaped by structure, see
    :class:`emvsbayes.gaussian.em.GaussianStats`), all in the data set's standardised frame and taken about
    ``shift`` (K, D), which depends only on the parameters and the frame, so it is the same for every chunk;
    ``loglik`` the objective of those rows (original units).
    """

    n_rows: int
    nk: np.ndarray
    sum_z: np.ndarray
    sum_zz: np.ndarray
    shift: np.ndarray
    loglik: float

    @property
    def n_numbers(self) -> int:
        """How many numbers the record sends over the network (besides its shift, zero but for a
        collapsing component)."""
        return 2 + self.nk.size + self.sum_z.size + self.sum_zz.size


# Rows per block of the standardising copy: a block's rows and its transpose stay in cache.
STANDARDISE_ROWS = 16384

def standardised(model: GaussianMixtureModel, frame: Frame, block: np.ndarray, out: np.ndarray | None = None) -> GaussianData:
    """``block`` (n, D) as the E-step takes it: :func:`emvsbayes.gaussian.em.prepare` with ``frame``, the
    same numbers to the last bit (the same subtraction and division), in one pass.

    Why not ``prepare`` itself: it is run on every chunk at every iteration here, not once, and it makes three
    passes over the chunk (a transposing copy, then the centring, then the scaling) and forms sum_i z_i z_i^T,
    which only ``tied`` reads. Fused in cache-sized blocks and without that product it costs 4 ms per million
    rows at D = 2 instead of 7, against an E-step of 16 (CPU time, measured).

    ``out`` (D, n or more): where to write the standardised data (its first n columns), instead of a new array.
    """
    n, d = block.shape
    z_t = np.empty((d, n)) if out is None else out[:, :n]
    centre, scale = frame.centre[:, None], frame.scale[:, None]
    for start in range(0, n, STANDARDISE_ROWS):
        rows = z_t[:, start : start + STANDARDISE_ROWS]
        np.subtract(block[start : start + STANDARDISE_ROWS].T, centre, out=rows)
        rows /= scale
    # The other structures never read the total second moment: NaN, so a use of it could not pass unseen.
    zz_total = z_t @ z_t.T if model.covariance_type == "tied" else np.full((d, d), np.nan)
    # prepare's block size for data this long (any size gives the same sums to rounding; this one keeps a
    # block's work arrays in cache and decides the E-step's threads as prepare would).
    block_rows = chunk_size_for(model.covariance_type, n, d, model.n_components)
    return GaussianData(z_t, frame, zz_total, block_rows)


def chunk_statistics(model: GaussianMixtureModel, frame: Frame, params: GaussianParams, kind: str,
                     block: np.ndarray) -> ChunkStats:
    """The E-step statistics of one chunk ``block`` (n, D), by the in-memory E-step in ``frame``."""
    data = standardised(model, frame, np.asarray(block, dtype=float), _scratch(block.shape[1], block.shape[0]))
    stats, loglik = E_STEPS[kind](model, data, params)
    return ChunkStats(block.shape[0], stats.nk.copy(), stats.sum_z.copy(), np.array(stats.sum_zz), stats.shift.copy(),
                      float(loglik))


_SCRATCH = threading.local()


def _scratch(d: int, n: int) -> np.ndarray:
    """A (D, n or more) array kept by the calling thread for the next chunk's standardised data.

    Why: a chunk's fresh 16 MB array is fresh memory the kernel must fault in, page by page, and Dask's
    workers return freed memory to the system at once (``MALLOC_TRIM_THRESHOLD_=65536``), so every chunk
    paid for it again: 33 against 27 ns per row for read, standardising and E-step together (CPU, one
    process with that setting, 1e6-row chunks). Safe to reuse: nothing :func:`chunk_statistics` returns
    refers to it (the statistics are copied out), and a thread runs one chunk at a time.
    """
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.shape[0] != d or buffer.shape[1] < n:
        buffer = _SCRATCH.buffer = np.empty((d, n))
    return buffer


def add_statistics(*parts: ChunkStats) -> ChunkStats:
    """The statistics of the rows of all ``parts`` (one reduction task); the log-likelihoods are added
    exactly (:func:`math.fsum`) so the order of the tree does not move them."""
    first = parts[0]
    for part in parts[1:]:
        if not np.array_equal(part.shift, first.shift):
            raise AssertionError("chunks took their moments about different points: the frame or the "
                                 "parameters differed between tasks")
    return ChunkStats(
        sum(part.n_rows for part in parts),
        np.sum([part.nk for part in parts], axis=0),
        np.sum([part.sum_z for part in parts], axis=0),
        np.sum([part.sum_zz for part in parts], axis=0),
        first.shift,
        math.fsum(part.loglik for part in parts),
    )


def _tree(parts: list, add, split_every: int):
    """The delayed reduction of ``parts`` (from :func:`per_chunk`) by ``add`` of at most ``split_every`` at a
    time; a single part is passed through ``add`` too, so the result is never a cell."""
    from dask import delayed

    while True:
        parts = [delayed(_combine, pure=True)(add, *parts[i : i + split_every]) for i in range(0, len(parts), split_every)]
        if len(parts) == 1:
            return parts[0]


def as_row_chunked(x):
    """``x`` as a float (N, D) dask array with every column in one chunk (the E-step needs whole rows);
    a 1-D array is N points of one feature."""
    import dask.array as da

    if not isinstance(x, da.Array):
        raise TypeError(f"chunked.fit takes a dask.array (N, D), got {type(x).__name__}; "
                        "use emvsbayes.gaussian.fit for data in memory")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"data must be (N,) or (N, D), got shape {x.shape}")
    if x.dtype != np.float64:
        x = x.astype(np.float64)
    if len(x.chunks[1]) > 1:
        x = x.rechunk({1: -1})
    if any(math.isnan(n) for n in x.shape):
        raise ValueError("the number of rows of each chunk must be known: call x.compute_chunk_sizes() first")
    return x


def _in_cell(block: np.ndarray, function, *args) -> np.ndarray:
    """``function(*args, block)`` in a 1 x 1 object array (a dask array's block); None for an empty chunk."""
    out = np.empty((1, 1), dtype=object)
    out[0, 0] = function(*args, block) if block.shape[0] else None
    return out


def per_chunk(x, function, *args) -> list:
    """One delayed ``function(*args, chunk)`` per row chunk of ``x`` (N, D), None for an empty chunk.

    Written as a ``map_blocks`` of ``x`` rather than a task taking each chunk from ``x.to_delayed()``: Dask fuses
    a ``map_blocks`` with the task that reads or makes the chunk, so the chunk is consumed where it is read,
    inside one task. As two tasks, the scheduler may run them on different workers and send the chunk between
    them (measured: 2.5x the CPU time per row of the fused form).
    """
    cells = x.map_blocks(_in_cell, function, *args, dtype=object, chunks=((1,) * len(x.chunks[0]), (1,)),
                         meta=np.empty((0, 0), dtype=object))
    return cells.to_delayed().ravel().tolist()


def _combine(add, *parts):
    """``add`` of the non-empty ``parts`` (each a 1 x 1 cell from :func:`per_chunk`, or an earlier sum)."""
    values = [part[0, 0] if isinstance(part, np.ndarray) and part.dtype == object else part for part in parts]
    values = [value for value in values if value is not None]
    return add(*values) if values else None


def frame_of(model: GaussianMixtureModel, column_mean: np.ndarray, column_var: np.ndarray) -> Frame:
    """The standardising frame :func:`emvsbayes.gaussian.em.prepare` would choose for data with these column
    means and (population) variances: centre the means; scale by each column's sd (1 for a constant
    column), or for ``spherical``, whose structure survives only a common scale, by the root mean variance.

    (A public hook written here because the in-memory module chooses the scale inside ``prepare``, from the
    data in memory. If the two rules ever differ, results still agree: the frame only sets the coordinates
    the arithmetic runs in.)
    """
    if model.covariance_type == "spherical":
        rms = float(np.sqrt(np.mean(column_var)))
        scale = np.full(column_var.shape[0], rms if rms > 0 else 1.0)
    else:
        sd = np.sqrt(column_var)
        scale = np.where(sd > 0, sd, 1.0)
    return Frame(np.asarray(column_mean, dtype=float), scale)


def _column_sums(centre: np.ndarray | None, block: np.ndarray) -> np.ndarray:
    """(n, sum_i y_i (D,)) packed as one vector, for y = block (``centre`` None) or its squared deviations."""
    y = block if centre is None else np.square(block - centre)
    return np.concatenate([[block.shape[0]], y.sum(axis=0)])


def _add_vectors(*parts: np.ndarray) -> np.ndarray:
    return np.sum(parts, axis=0)


def data_frame(model: GaussianMixtureModel, x, client, split_every: int = SPLIT_EVERY) -> Frame:
    """The standardising frame of the whole of ``x``: two passes (the means, then the variances about them,
    which, unlike E[x^2] - mean^2, do not cancel for data far from the origin)."""
    sums = client.compute(_tree(per_chunk(x, _column_sums, None), _add_vectors, split_every)).result()
    centre = sums[1:] / sums[0]
    squares = client.compute(_tree(per_chunk(x, _column_sums, centre), _add_vectors, split_every)).result()
    return frame_of(model, centre, squares[1:] / squares[0])


def _not_kept() -> np.ndarray:
    raise ValueError("the responsibilities of chunked data are not kept (N x K numbers); "
                     "use emvsbayes.gaussian.chunked.log_resp(model, params, x) for them as a dask array")


def chunked_e_step(model: GaussianMixtureModel, x, frame: Frame, client, kind: str, split_every: int,
                   params: GaussianParams) -> tuple[GaussianStats, float]:
    """One E-step over all chunks of ``x`` on ``client``: (statistics of the whole data, objective), the
    record :func:`emvsbayes.gaussian.em.m_step` takes."""
    parts = per_chunk(x, chunk_statistics, model, frame, params, kind)
    total = client.compute(_tree(parts, add_statistics, split_every)).result()
    stats = GaussianStats(total.nk, total.sum_z, total.sum_zz, frame, total.shift, recompute_log_resp=_not_kept)
    return stats, total.loglik


def fit(
    model: GaussianMixtureModel,
    x,
    init: GaussianParams,
    *,
    kind: str = "soft",
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    split_every: int = SPLIT_EVERY,
    **options,
) -> EMFit:
    """EM for the Gaussian mixture on a dask array, the same fit as :func:`emvsbayes.gaussian.em.fit`.

    Parameters
    ----------
    model
        K, structure and ``reg_covar``.
    x
        ``dask.array`` (N, D) or (N,), chunked by rows (column chunks are joined: the E-step needs whole
        rows); each chunk must fit in a worker's memory, with its (K, n) work arrays.
    init
        Starting parameters in original units (for example :func:`emvsbayes.gaussian.initial_params` of a
        sample of rows).
    kind
        ``"soft"`` or ``"hard"`` (classification EM).
    client, scheduler, n_workers
        Where to run: an open ``distributed.Client``; else the address of an existing scheduler; else a
        ``LocalCluster`` of ``n_workers`` processes (default one per core), started and closed here.
    split_every
        Partial statistics combined per reduction task.
    options
        Passed to :func:`emvsbayes.em.fit_em` (``tol``, ``param_tol``, ``max_iter``, ``min_iter``,
        ``keep_stats``). Each row of the trace keeps the statistics (small: no responsibilities).

    Returns
    -------
    emvsbayes.em.EMFit
        ``stats.log_resp`` is not available (N x K numbers): :func:`log_resp` gives it as a dask array.
    """
    if kind not in E_STEPS:
        raise ValueError(f"kind must be one of {sorted(E_STEPS)}, got {kind!r}")
    model.validate_params(init)
    x = as_row_chunked(x)
    if x.shape[0] < model.n_components:
        raise ValueError(f"need at least n_components = {model.n_components} rows, got {x.shape[0]}")
    if x.shape[1] != init.n_features:
        raise ValueError(f"init has {init.n_features} features and the data {x.shape[1]} columns")
    with cluster_client(client, scheduler, n_workers) as active:
        frame = data_frame(model, x, active, split_every)
        e_step = partial(chunked_e_step, model, x, frame, active, kind, split_every)
        return fit_em(e_step, _numbered_m_step(model), init, m_step_slack=partial(regularisation_slack, model),
                      **options)


def _numbered_m_step(model: GaussianMixtureModel):
    """The M-step, counting its calls so a degenerate covariance names its iteration (as the in-memory
    fit's does)."""
    count = iter(range(1, 1 << 62))

    def step(stats: GaussianStats, params: GaussianParams) -> GaussianParams:
        return m_step(model, stats, params, iteration=next(count))

    return step


def log_resp(model: GaussianMixtureModel, params: GaussianParams, x):
    """log P(component k | x_i) as a lazy dask array (N, K), chunked as ``x``'s rows."""
    x = as_row_chunked(x)
    return x.map_blocks(_block_log_resp, model, params, chunks=(x.chunks[0], (params.n_components,)), dtype=float)


def _block_log_resp(block: np.ndarray, model: GaussianMixtureModel, params: GaussianParams) -> np.ndarray:
    if not block.shape[0]:  # an empty chunk has no frame of its own
        return np.empty((0, params.n_components))
    return in_memory_log_resp(model, params, block)


__all__ = ["ChunkStats", "add_statistics", "chunk_statistics", "chunked_e_step", "cluster_client", "data_frame",
           "fit", "frame_of", "log_resp"]
