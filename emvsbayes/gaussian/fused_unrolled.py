"""The fused soft E-step of full covariances, generated and compiled per (D, K) so a row stays in registers.

Why: the generic kernel (:mod:`emvsbayes.gaussian.fused`) loops over components and features outside its
loops along a block's rows, so every whitening term, every exponential and every weighted sum reads and
writes a row of the block: its loops are load/store-bound (at N = 1e7, D = 2, K = 3 about 4x the memory
floor in CPU time, benchmarks/README.md). Here the loops over components and features are written out for
one (D, K), with every parameter a scalar local, so per row the whole computation happens in registers:

- loop A, per row: z (D values), per component the whitened residual y = U_k^T (z - mu_k) and the score
  s_k = base_k - |y|^2 / 2, the largest score m, e_k = exp(s_k - m) (:func:`fused.exp_le0`, vectorised),
  the total t and the responsibilities e_k / t. Only K + 2 values per row are stored (responsibilities, m
  and t; in L1 cache), and the K log responsibilities' s_k - m when they are kept. Compiled with
  ``fastmath`` "contract" only: "reassoc" must never reach the exponential (see ``exp_le0``).
- loop B, per tile of components x design entries: the responsibility-weighted sums of the design
  [1, z, z_a z_b (a <= b)], each product formed once per row in registers, each accumulator a register
  (register-blocked: per row K + D loads feed K F multiply-adds). "reassoc" here, and only here, lets LLVM
  vectorise these reductions.
- per block, the log of the totals one group of rows at a time (as the generic kernel, ``group_rows_for``)
  and the block's sum of m: the objective.

The results equal the generic kernel's and the numpy route's to rounding (tests/test_gaussian_fused.py).
Blocks are the generic kernel's (:data:`fused.BLOCK_ROWS`, fixed by N), each block's sums go to its own
slot and are added in block order, so the result is the same to the last bit for any number of threads.

The source of each (D, K) kernel is written to a file in :func:`kernel_dir` (named by a hash of the
source) and imported from there, so numba's ``cache=True`` keeps the machine code beside it: a process
compiles a (D, K) only once per machine (a few seconds; the benchmark reports it apart).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

# Features and components up to which a kernel is generated (beyond, the generic kernel runs): the
# generated source grows as K D^2, and so does its compile time.
MAX_FEATURES = 10
MAX_COMPONENTS = 16
# Rows from which the generated kernel is used: compiling one (D, K) takes seconds (5 s at D = 2, K = 3,
# 50 s at D = 10, K = 8, under load; then cached on disk), against a saving of 8-170 ns per row and
# iteration over the generic kernel; below, the generic kernel (compiled with the package) runs. A rule of
# N, D and K: the kernels agree to rounding, not to the bit.
MIN_ROWS = 1 << 20
# Accumulators per tile of loop B: about what the vector registers hold (16 with AVX2, 32 with AVX-512)
# beside the values loaded per row.
TILE_ACCUMULATORS = 24


def kernel_dir() -> Path:
    """Where generated kernels and numba's cache of them live: ``$EMVSBAYES_KERNEL_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/emvsbayes/kernels`` (``~/.cache/...``); a fresh temporary folder if that cannot be
    written (the kernels are then compiled once per process)."""
    configured = os.environ.get("EMVSBAYES_KERNEL_CACHE_DIR")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emvsbayes" / "kernels"
    folder = Path(configured) if configured else base
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-")
        probe.close()
        return folder
    except OSError:
        return Path(tempfile.mkdtemp(prefix="emvsbayes-kernels-"))


def design_entries(d: int) -> list[tuple[int, ...]]:
    """The design [1, z_a, z_a z_b (a <= b)] as index tuples: (), (a,), (a, b)."""
    return [(), *((a,) for a in range(d)), *((a, b) for a in range(d) for b in range(a, d))]


def tiles(n_components: int, n_design: int) -> list[tuple[list[int], list[int]]]:
    """Loop B's tiles (components, design entries): all components together (at most
    :data:`MAX_COMPONENTS`), design entries in runs, so that a tile has at most about
    :data:`TILE_ACCUMULATORS` accumulators (at least one design entry per tile)."""
    per_k = max(1, TILE_ACCUMULATORS // n_components)
    return [(list(range(n_components)), list(range(f, min(f + per_k, n_design)))) for f in range(0, n_design, per_k)]


def source(d: int, k: int, block_rows: int) -> str:
    """The Python source of the (D, K) kernel module (see the module docstring), for blocks of
    ``block_rows`` rows."""
    entries = design_entries(d)
    rows = block_rows
    # One flat scratch per thread, rows of ``block_rows`` at offsets written into the source as constants:
    # the block's z (D rows), responsibilities (K), largest scores, totals, and s_k - m (K, kept only when
    # asked for). One base pointer with constant offsets lets LLVM prove loads and stores independent; as
    # separate arrays it needed a runtime overlap check per pair and gave up vectorising.
    z_at = {a: a * rows for a in range(d)}
    r_at = {j: (d + j) * rows for j in range(k)}
    m_at, t_at = (d + k) * rows, (d + k + 1) * rows
    s_at = {j: (d + k + 2 + j) * rows for j in range(k)}
    lines = [
        f'"""Generated by emvsbayes.gaussian.fused_unrolled for D = {d}, K = {k}, blocks of {rows} rows;',
        'do not edit."""',
        "import math",
        "import numba",
        "import numpy as np",
        "from emvsbayes.gaussian.fused import exp_le0",
        "",
        f"SCRATCH = {(d + 2 * k + 2) * rows}",
        "",
        "",
        "@numba.njit(cache=True, nogil=True, error_model='numpy', fastmath={'contract'})",
        "def scores(z_t, start, n, mu, u_t, base, work, keep_log_resp):",
    ]
    body = []
    for a in range(d):
        body += [f"for i in range(n):", f"    work[{z_at[a]} + i] = z_t[{a}, start + i]"]
    for j in range(k):
        body.append(f"b{j} = base[{j}]")
        for a in range(d):
            body.append(f"m{j}_{a} = mu[{j}, {a}]")
            for b in range(a + 1):
                body.append(f"u{j}_{a}_{b} = u_t[{j}, {a}, {b}]")
    body.append("for i in range(n):")
    row = [f"z{a} = work[{z_at[a]} + i]" for a in range(d)]
    for j in range(k):
        row += [f"d{a} = z{a} - m{j}_{a}" for a in range(d)]
        for a in range(d):
            terms = " + ".join(f"u{j}_{a}_{b} * d{b}" for b in range(a + 1))
            row.append(f"y = {terms}")
            row.append("q = y * y" if a == 0 else "q += y * y")
        row.append(f"s{j} = b{j} - 0.5 * q")
    row.append("m = s0")
    row += [f"m = max(m, s{j})" for j in range(1, k)]
    row += [f"e{j} = exp_le0(s{j} - m)" for j in range(k)]
    row.append("t = " + " + ".join(f"e{j}" for j in range(k)))
    row.append("inv = 1.0 / t")
    row += [f"work[{r_at[j]} + i] = e{j} * inv" for j in range(k)]
    row += [f"work[{m_at} + i] = m", f"work[{t_at} + i] = t", "if keep_log_resp:"]
    keep = [f"work[{s_at[j]} + i] = s{j} - m" for j in range(k)]
    body += ["    " + line for line in row] + ["        " + line for line in keep]
    lines += ["    " + line for line in body]
    lines += ["", ""]
    # loop B, one function per tile (each a reduction loop LLVM vectorises with reassociation)
    tile_names = []
    for number, (group, features) in enumerate(tiles(k, len(entries))):
        name = f"tile{number}"
        tile_names.append(name)
        needed = sorted({a for f in features for a in entries[f]})
        lines += ["@numba.njit(cache=True, nogil=True, fastmath={'reassoc', 'contract'})",
                  f"def {name}(work, n, out):"]
        tb = [f"a{j}_{f} = 0.0" for j in group for f in features]
        tb.append("for i in range(n):")
        inner = [f"z{a} = work[{z_at[a]} + i]" for a in needed]
        inner += [f"r{j} = work[{r_at[j]} + i]" for j in group]
        for f in features:
            entry = entries[f]
            if len(entry) == 2:
                inner.append(f"p{f} = z{entry[0]} * z{entry[1]}")
        for j in group:
            for f in features:
                entry = entries[f]
                factor = "" if not entry else f" * z{entry[0]}" if len(entry) == 1 else f" * p{f}"
                inner.append(f"a{j}_{f} += r{j}{factor}")
        tb += ["    " + line for line in inner]
        tb += [f"out[{j}, {f}] = a{j}_{f}" for j in group for f in features]
        lines += ["    " + line for line in tb] + ["", ""]
    lines += [
        "@numba.njit(cache=True, nogil=True, fastmath={'reassoc', 'contract'})",
        "def row_sum(work, start, stop):",
        "    acc = 0.0",
        "    for i in range(start, stop):",
        "        acc += work[i]",
        "    return acc",
        "",
        "",
        "@numba.njit(cache=True, nogil=True, fastmath={'reassoc', 'contract'})",
        "def row_product(work, start, stop):",
        "    acc = 1.0",
        "    for i in range(start, stop):",
        "        acc *= work[i]",
        "    return acc",
        "",
        "",
        "@numba.njit(cache=True, nogil=True)",
        "def stripe(z_t, mu, u_t, base, block_rows, group_rows, first, last, log_resp_t, keep_log_resp, block_sums,",
        "           objectives):",
        "    n_samples = z_t.shape[1]",
        "    work = np.empty(SCRATCH)",
        "    for blk in range(first, last):",
        f"        start = blk * {rows}",
        f"        n = min({rows}, n_samples - start)",
        "        scores(z_t, start, n, mu, u_t, base, work, keep_log_resp)",
        "        out = block_sums[blk]",
        *[f"        {name}(work, n, out)" for name in tile_names],
        f"        objective = row_sum(work, {m_at}, {m_at} + n)",
        "        g = 0",
        "        while g < n:",
        "            stop = min(n, g + group_rows)",
        f"            objective += math.log(row_product(work, {t_at} + g, {t_at} + stop))",
        "            g = stop",
        "        if keep_log_resp:",
        "            for i in range(n):",
        f"                log_total = math.log(work[{t_at} + i])",
        *[f"                log_resp_t[{j}, start + i] = work[{s_at[j]} + i] - log_total" for j in range(k)],
        "        objectives[blk] = objective",
        "",
        "",
        "@numba.njit(cache=True, parallel=True)",
        "def all_blocks_parallel(z_t, mu, u_t, base, block_rows, group_rows, n_stripes, log_resp_t, keep_log_resp,",
        "                        block_sums, objectives):",
        "    n_blocks = block_sums.shape[0]",
        "    for part in numba.prange(n_stripes):",
        "        stripe(z_t, mu, u_t, base, block_rows, group_rows, part * n_blocks // n_stripes,",
        "               (part + 1) * n_blocks // n_stripes, log_resp_t, keep_log_resp, block_sums, objectives)",
        "",
        "",
        "@numba.njit(cache=True, nogil=True)",
        "def all_blocks_serial(z_t, mu, u_t, base, block_rows, group_rows, n_stripes, log_resp_t, keep_log_resp,",
        "                      block_sums, objectives):",
        "    stripe(z_t, mu, u_t, base, block_rows, group_rows, 0, block_sums.shape[0], log_resp_t, keep_log_resp,",
        "           block_sums, objectives)",
        "",
    ]
    return "\n".join(lines)


@functools.cache
def kernels(d: int, k: int, block_rows: int):
    """The compiled (D, K) kernel module: its ``all_blocks_parallel`` and ``all_blocks_serial`` take the
    arguments of :func:`fused._all_blocks_parallel` (the generic kernel's) and give the same results to
    rounding. The source is written once (by content hash, atomically: processes may race) and imported."""
    text = source(d, k, block_rows)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    name = f"emvsbayes_fused_d{d}_k{k}_{digest}"
    folder = kernel_dir()
    path = folder / f"{name}.py"
    if not path.exists() or path.read_text() != text:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".py")
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's cache locates functions through their module
    spec.loader.exec_module(module)
    return module


def covers(d: int, k: int) -> bool:
    """Whether a (D, K) kernel can be generated."""
    return d <= MAX_FEATURES and k <= MAX_COMPONENTS


def pays(d: int, k: int, n: int) -> bool:
    """Whether N rows of D features with K components take the generated kernel (see :data:`MIN_ROWS`)."""
    return covers(d, k) and n >= MIN_ROWS


__all__ = ["MAX_COMPONENTS", "MAX_FEATURES", "MIN_ROWS", "TILE_ACCUMULATORS", "covers", "design_entries", "kernel_dir",
           "kernels", "pays", "source", "tiles"]
