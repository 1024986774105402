"""What a run may ask of this machine, checked before any work starts.

A spec can ask for more than a machine holds (``draws = 2147483647``, ``bootstrap = 2147483647``,
``chains = 100000``, K = 10000 components on 20,000 rows): the run would then abort in C++, end in a
``MemoryError`` after minutes of work, or be killed by the kernel. So the memory each stage needs is
estimated from the spec and the data's shape, before fitting, and a run whose estimate exceeds the
limit is refused with one line naming the estimate, the limit, the spec keys that lower the need and
the variable that raises the limit.

The estimates count the arrays a stage holds at once (float64, 8 bytes a number), with a small factor
for the working copies numpy makes; they are meant to be right within a factor of a few, which is what
telling "fits" from "cannot fit" needs. The limit is :envvar:`EMVSBAYES_MEMORY_LIMIT` (``"32G"``,
``"500M"``, bytes) when set, else 90% of the machine's memory (the smaller of physical memory and the
cgroup limit of a container).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from emvsbayes.errors import UserError, out_option


#: Counts of a mixture's data (a coin set's tosses, a Poisson count) beyond this are refused: at 10^15 the posterior
#: is narrower than NUTS can step through in float64 (relative sd ~ 1e-8) and every draw was lost after the fit
#: ("draws is empty", an internal error); 10^10 and 10^11 sampled. (The hidden Markov model stops at 10^7, where
#: Baum-Welch's log-likelihood loses the digits it needs.)
MAX_MIXTURE_COUNT = 10**10
MAX_MIXTURE_COUNT_WHY = "sampling the posterior fails (it is narrower than float64 lets NUTS step through)"

#: Below this standard deviation of a column (as fitted) NUTS does not move: its step size adapts from 1 and its mass
#: matrix is regularised towards 1 (numpyro), and a mean known to 1e-60 stayed at its start in every draw (the run
#: ended in an internal error); at 1e-50 nearly every transition diverged, at 1e-40 and above it samples. A Gaussian
#: hidden Markov model's series at 1e-70 had every transition divergent and no posterior to compare.
MIN_SAMPLED_SPREAD = 1e-30


def check_sampled_spread(x, columns, rescale: str) -> None:
    """Refuse a column of ``x`` (N, D) whose standard deviation is positive but below :data:`MIN_SAMPLED_SPREAD` (a
    constant column is the families' to judge); ``rescale`` starts the fix ("standardize = true, or ")."""
    import numpy as np

    x = np.asarray(x, dtype=float).reshape(len(x), -1)
    if x.shape[0] < 2:
        return
    spread = np.std(x, axis=0)
    j = int(np.argmin(np.where(spread > 0, spread, np.inf)))
    if 0 < spread[j] < MIN_SAMPLED_SPREAD:
        raise UserError(f"column {str(columns[j])!r} spreads over only {spread[j]:.2g} (its standard deviation): the "
                        f"sampler cannot shrink its steps that far and stays at its start; {rescale}rescale the column "
                        f"(e.g. multiply it by 1e{-int(np.floor(np.log10(spread[j])))})")

#: The variable that sets the memory limit (bytes, or a number with K, M, G or T).
MEMORY_LIMIT_VARIABLE = "EMVSBAYES_MEMORY_LIMIT"
#: Share of the machine's memory a run may plan to use: the rest is the OS, Python and the libraries.
MACHINE_SHARE = 0.9
FLOAT = 8
#: Bytes of Python objects a CSV file becomes per byte of text: the decoded text (up to 4 bytes a
#: character) plus a str object (about 50 bytes) and a tuple slot per cell of a few characters.
CSV_EXPANSION = 16

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclass(frozen=True, slots=True)
class MemoryLimit:
    bytes: int
    source: str  # where the number comes from, for the message


def _machine_memory() -> int | None:
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no container limit
            sizes.append(int(text))
    return min(sizes) if sizes else None


def parse_size(text: str) -> int | None:
    """``"32G"`` -> 32 * 2**30; None for anything that is not a size."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        return None
    value = float(match.group(1)) * _UNITS[match.group(2).upper()]
    return int(value) if value >= 1 else None


def memory_limit() -> MemoryLimit:
    given = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if given is not None and given.strip():
        size = parse_size(given)
        if size is None:
            raise UserError(f"{MEMORY_LIMIT_VARIABLE}={given!r} is not a size; give bytes or a number with K, M, G or "
                            f"T, e.g. {MEMORY_LIMIT_VARIABLE}=16G")
        return MemoryLimit(size, f"set by {MEMORY_LIMIT_VARIABLE}")
    machine = _machine_memory()
    if machine is None:  # unknown: refuse nothing that a 64-bit address space could hold
        return MemoryLimit(2**62, "unknown machine memory")
    return MemoryLimit(int(machine * MACHINE_SHARE), f"{MACHINE_SHARE:.0%} of this machine's {format_size(machine)}")


def format_size(n: float) -> str:
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"
    return f"{int(n)} bytes"


def check_fits(need: float, what: str, lower: str) -> None:
    """Refuse a stage whose estimated ``need`` (bytes) exceeds the limit.

    ``what`` names the stage and its sizes; ``lower`` says which spec keys lower the need.
    """
    limit = memory_limit()
    if need > limit.bytes:
        raise UserError(f"{what} would need about {format_size(need)} of memory, more than the limit of "
                        f"{format_size(limit.bytes)} ({limit.source}); {lower}, or raise the limit with "
                        f"{MEMORY_LIMIT_VARIABLE}=<size> if the machine has the memory")


def check_csv_size(path: Path, size: int) -> None:
    """A CSV file is read whole into Python objects: refuse one too large to hold."""
    check_fits(size * CSV_EXPANSION, f"reading {path.name} ({format_size(size)})",
               "read a smaller file (a sample of the rows, fewer columns)")


# --- the stages of a run ------------------------------------------------------------------------


def _family(name: str):
    from emvsbayes.family import get_family  # the registry, which imports a family only when asked

    return get_family(name)


def _size_facts(family: str, d: int) -> dict:
    facts = getattr(_family(family), "size_facts", None)
    if facts is not None:
        return facts(d)
    # a family that says nothing: a generous count (a mean, a D x D covariance and its factor, a weight)
    return {"params_per_component": 1 + d + 2 * d * d, "trace_per_observation": 0, "observations": "observations"}


def _params_per_component(family: str, d: int) -> int:
    return _size_facts(family, d)["params_per_component"]


def em_need(n: int, k: int, d: int, family: str, em: dict) -> float:
    """One EM fit: the (N, K) log-joint, responsibilities and their working copies (about 6); the full trace
    (parameters and, for coins, the responsibilities of each iteration) of the best start of each kind and of
    the start running; of every other start its objective at each iteration, its start and its answer
    (:func:`emvsbayes.em.fit_em_until`)."""
    per_fit = 6 * n * k + n * k * d  # the Gaussian E-step's centred data, (N, K, D) in blocks at most
    # the parameters of each iteration, and the statistics per observation the family keeps in its trace
    params = k * _params_per_component(family, d)
    full_trace = em["max_iter"] * (params + n * k * _size_facts(family, d)["trace_per_observation"])
    kinds = len(em["kinds"])
    # a restart rule that stops on agreement runs up to max_init starts
    restarts = em["max_init"] if em.get("reach_best") and em.get("max_init") else em.get("n_init", 1)
    return FLOAT * (per_fit + full_trace + kinds * (full_trace + restarts * (em["max_iter"] + 2 * params)))


def bootstrap_need(n: int, k: int, d: int, family: str, replicates: int) -> float:
    """The replicates' aligned parameters, log-likelihoods and flags (kept), and one refit at a time."""
    per_replicate = k * _params_per_component(family, d) + k + 8
    return FLOAT * (2 * replicates * per_replicate + 6 * n * k)


def sampler_need(n: int, k: int, d: int, family: str, chains: int, draws: int) -> float:
    """The draws of every chain: parameters (raw and relabelled), sample statistics (about 16 a draw),
    the pointwise log-likelihood (N a draw) and the membership probabilities (N x K a draw, with the
    relabelled copy and the relabelling's working arrays: about 4)."""
    s = chains * draws
    return FLOAT * s * (2 * k * _params_per_component(family, d) + 16 + n + 4 * n * k)


def check_run(spec: dict, n: int, d: int) -> None:
    """Refuse a comparison run (``emvsbayes run``) that cannot fit in memory; ``n`` rows or sets, ``d`` columns."""
    family = spec["model"]["family"]
    k = spec["model"]["components"]
    em, bayes, choice = spec["em"], spec["bayes"], spec["model_choice"]
    noun = _size_facts(family, d)["observations"]
    shape = f"{n:,} {noun} and K = {k}"
    check_fits(em_need(n, k, d, family, em),
               f"EM on {shape} ({em['n_init']} start(s), max_iter = {em['max_iter']})",
               "lower [model] components, [em] n_init or max_iter, or use fewer rows"
               + (" or columns" if d > 1 else ""))
    if em["bootstrap"]:
        check_fits(bootstrap_need(n, k, d, family, em["bootstrap"]),
                   f"[em] bootstrap = {em['bootstrap']:,} replicates on {shape}", "lower [em] bootstrap")
    if bayes["enabled"]:
        check_fits(sampler_need(n, k, d, family, bayes["chains"], bayes["draws"]),
                   f"[bayes] chains x draws = {bayes['chains']:,} x {bayes['draws']:,} on {shape}",
                   "lower [bayes] chains or draws (or set enabled = false)")
        # tuning draws are not kept, but a sampler allocates per step: a count far beyond any use is refused
        _check_count(bayes["tune"], "[bayes] tune")
    ladder = spec.get("ladder", {})
    if ladder.get("enabled"):
        # the Laplace and ADVI approximations' draws are kept as the posterior's are; the ladder's bootstraps
        # (Bayesian, and the kind the run did not do) keep their replicates as [em] bootstrap does
        check_fits(sampler_need(n, k, d, family, 1, ladder["draws"]), f"[ladder] draws = {ladder['draws']:,} on {shape}",
                   "lower [ladder] draws")
        check_fits(2 * bootstrap_need(n, k, d, family, ladder["bootstrap"]),
                   f"[ladder] bootstrap = {ladder['bootstrap']:,} refits on {shape}", "lower [ladder] bootstrap")
        _check_count(ladder["vi_iter"], "[ladder] vi_iter", usual="3,000")
    # each test of K against K + 1 keeps its B statistics and refits one simulated data set at a time, K + 1
    # components at most
    tests = sum(1 for kc in choice["components"] if kc + 1 in choice["components"])
    if choice["lrt_bootstrap"] and tests:
        k_top = max(choice["components"]) + 1
        check_fits(FLOAT * (2 * tests * choice["lrt_bootstrap"]) + em_need(n, k_top, d, family, em),
                   f"[model_choice] lrt_bootstrap = {choice['lrt_bootstrap']:,} simulated data sets for each of "
                   f"{tests} test(s) on {n:,} {noun}", "lower [model_choice] lrt_bootstrap")
    if choice["sparse"]:
        k_max = choice["sparse_components"]
        sparse = f"[model_choice] sparse_components = {k_max:,} on {n:,} {noun}"
        check_fits(em_need(n, k_max, d, family, em), f"{sparse} (its EM start)", "lower [model_choice] sparse_components")
        check_fits(sampler_need(n, k_max, d, family, choice["chains"], choice["draws"]),
                   f"{sparse} with chains x draws = {choice['chains']:,} x {choice['draws']:,}",
                   "lower [model_choice] sparse_components, chains or draws")
    if choice["sparse"] or (choice["bayes"] and choice["components"]):  # a posterior per K, or the sparse one
        _check_count(choice["tune"], "[model_choice] tune", usual="500")
    for kc in choice["components"]:
        check_fits(em_need(n, kc, d, family, {**em, "n_init": max(em["n_init"], 10)}),
                   f"[model_choice] EM for K = {kc} on {n:,} {noun}",
                   "lower the K listed in [model_choice] components")
        if choice["bayes"]:
            check_fits(sampler_need(n, kc, d, family, choice["chains"], choice["draws"]),
                       f"[model_choice] chains x draws = {choice['chains']:,} x {choice['draws']:,} for K = {kc}",
                       "lower [model_choice] chains or draws (or set bayes = false)")


#: A local Dask worker process before any work: the interpreter, numpy, SciPy and Dask, and what a replicate or a
#: chunk imports (JAX, PyMC's programs); a floor, so --workers 100000 is refused rather than started.
WORKER_BYTES = 256 * 2**20


def check_workers(n_workers: int | None) -> None:
    """Refuse ``--workers`` below 1, or more local worker processes than the memory holds."""
    if n_workers is None:
        return
    if n_workers < 1:
        raise UserError(f"--workers must be a whole number >= 1, got {n_workers}")
    from emvsbayes.cluster import default_workers

    check_fits(n_workers * WORKER_BYTES, f"--workers {n_workers:,} local worker processes (at least "
               f"{format_size(WORKER_BYTES)} each)", f"give fewer, e.g. --workers {default_workers()} (one per core, the "
               "default)")


#: Tuning steps beyond this are refused: no mixture needs them, and each takes time and memory.
MAX_TUNE = 10**7


def _check_count(value: int, where: str, usual: str = "1,000") -> None:
    if value > MAX_TUNE:
        raise UserError(f"{where} = {value:,} is more than {MAX_TUNE:,} steps, far beyond what any mixture needs "
                        f"({usual} is usual); lower it")


def check_study(spec: dict) -> None:
    """Refuse a study whose replicate (one at a time per worker) or whose store cannot fit in memory."""
    family = spec["model"]["family"]
    from emvsbayes.study.spec import cells

    grid_cells = cells(spec)
    bayes, em = spec["bayes"], spec["em"]
    em_like = {"kinds": ["soft"], "n_init": em["n_init"], "max_iter": em["max_iter"]}
    for cell in grid_cells:
        n, d = _family(family).study_shape(cell)
        k = cell["components"]
        shape = f"a cell with {n:,} {_size_facts(family, d)['observations']}" + (f" of {d:,} columns" if d > 1 else "") \
            + f" and K = {k}"
        check_fits(em_need(n, k, d, family, em_like), f"EM on {shape}",
                   "lower [grid] components, " + ("dim " if d > 1 else "") + "or the data size, or [em] n_init or max_iter")
        check_fits(sampler_need(n, k, d, family, bayes["chains"], bayes["draws"]),
                   f"[bayes] chains x draws = {bayes['chains']:,} x {bayes['draws']:,} on {shape}",
                   "lower [bayes] chains or draws")
        _check_count(bayes["tune"], "[bayes] tune")
        # the nonparametric bootstrap and the Bayesian one (its Dirichlet-weighted refits) keep every replicate
        if spec["kind"] == "coverage" and {"bootstrap", "bootstrap_bayesian"} & set(spec["intervals"]["kinds"]):
            check_fits(bootstrap_need(n, k, d, family, spec["intervals"]["bootstrap"]),
                       f"[intervals] bootstrap = {spec['intervals']['bootstrap']:,} replicates on {shape}",
                       "lower [intervals] bootstrap")
    # Each stored record is a JSON file of a few KB, read back whole to assemble study.nc.
    n_records = len(grid_cells) * spec["replicates"]
    check_fits(n_records * 16 * 2**10, f"{len(grid_cells):,} cells x {spec['replicates']:,} replicates",
               "lower replicates or the number of [grid] values")



# --- disk ------------------------------------------------------------------------------------------

#: Room kept beyond an estimate: HDF5's metadata and the page beside the results.
DISK_MARGIN = 2 * 2**20


def results_need(spec: dict, n: int, d: int) -> float:
    """Bytes ``results.nc`` will take, about: the kept draws (parameters, statistics, pointwise
    log-likelihood), the bootstrap replicates and the EM traces, uncompressed."""
    family, k = spec["model"]["family"], spec["model"]["components"]
    em, bayes = spec["em"], spec["bayes"]
    per = k * _params_per_component(family, d)
    need = FLOAT * len(em["kinds"]) * (em["max_iter"] * per + n * k)
    need += FLOAT * em["bootstrap"] * (per + 4)
    if bayes["enabled"]:
        need += FLOAT * bayes["chains"] * bayes["draws"] * (2 * per + 16 + n)
    return need


def _disk_usage(folder: Path):
    """``shutil.disk_usage`` where ``folder`` is (or would be created), None when that cannot be told."""
    folder = Path(folder).absolute()
    for candidate in (folder, *folder.parents):
        try:
            return shutil.disk_usage(candidate)
        except OSError:
            continue
    return None


def free_space(folder: Path) -> int | None:
    """Bytes free where ``folder`` is (or would be created), None when that cannot be told."""
    usage = _disk_usage(folder)
    return None if usage is None else usage.free


def check_disk(folder: Path, need: float, what: str) -> None:
    """Refuse to start a write of about ``need`` bytes into ``folder`` when the disk has less free:
    HDF5 fails on a full disk in ways that cannot be caught (a crash, half a file)."""
    usage = _disk_usage(folder)
    if usage is not None and usage.total == 0:
        # /proc, /sys and the like: a file system of the kernel's own entries, with no blocks to write into
        raise UserError(f"{folder}: is on a file system that holds no files of ours (such as /proc or /sys); "
                        f"choose a folder on a disk with {out_option()}")
    free = free_space(folder)
    if free is not None and need + DISK_MARGIN > free:
        raise disk_full(folder, need + DISK_MARGIN, what, free)


def disk_full(folder: Path, need: float | None, what: str, free: int | None = None) -> UserError:
    """The one-line error for a disk that has (or had) no room for ``what``."""
    free = free_space(folder) if free is None else free
    room = f"; {format_size(free)} free" if free is not None else ""
    needed = f"needs about {format_size(need)}" if need else "needs more room"
    return UserError(f"{folder}: no space left on the disk for {what} (it {needed}{room}); free some space "
                     f"or choose a folder on another disk with {out_option()}")


def is_disk_full(error: BaseException) -> bool:
    """An OSError for a full disk or quota, or HDF5's RuntimeError that wraps one."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(error, RuntimeError) and ("errno = 28" in str(error) or "No space left" in str(error))
