"""The fused soft E-step of full covariances, generated and compiled per (D, K) so a row stays in registers.

Why: the generic kernel (:mod:`emvsbayes.gaussian.fused`) loops over components and features outside its
loops along a block's rows, so every whitening term, every exponential and every weighted sum reads and
writes a row of the block: its loops are load/store-bound (at N = 1e7, D = 2, K = 3 about 4x the memory
floor in CPU time, benchmarks/README.md). Here the loops over components and features are written out for
one (D, K), with every parameter a scalar local, so per row the whole computation happens in registers:

- loop A, per row (``scores_relative``): z (D values), per component the whitened residual
  y = U_k^T (z - mu_k) and the score s_k = base_k - |y|^2 / 2; e_k = exp(s_k - s_0) for k >= 1 relative to
  component 0 (:func:`fused.exp_bounded`, vectorised; the caller puts the widest component first), the
  total t = 1 + sum e_k and the responsibilities e_k / t; t split into mantissa and binary exponent (bit
  operations, exact). Only K + 3 values per row are stored (in L1 cache), and the K log responsibilities'
  s_k - s_0 when they are kept. A part of a block where some s_k - s_0 exceeds ``EXP_CEILING`` is done
  again relative to each row's largest score (``scores_shifted``, K exponentials). Compiled with
  ``fastmath`` "contract" only ("reassoc" must never reach the exponential, see ``exp_le0``) and
  ``error_model='numpy'`` (numba's check of ``1.0 / t`` for zero kept LLVM from vectorising the loop).
- loop B, per tile of components x design entries: the responsibility-weighted sums of the design
  [1, z, z_a z_b (a <= b)] (or of z - shift_k, ``_centred``, for components whose moments are taken about
  their mean), each product formed once per row in registers, each accumulator a register
  (register-blocked: per row K + D loads feed up to :data:`TILE_ACCUMULATORS` multiply-adds). "reassoc"
  here, and only here, lets LLVM vectorise these reductions.
- per part of a block, sum_i log p(z_i) = sum_i s_ref,i + log 2 sum_i exponent_i + log prod_i mantissa_i:
  one ``log`` per part.

Blocks of :data:`fused.BLOCK_ROWS` rows are processed in parts whose scratch (one flat array, rows at
offsets written into the source) stays within :data:`SCRATCH_BYTES`.
The results equal the generic kernel's and the numpy route's to rounding (tests/test_gaussian_fused.py).
Blocks are the generic kernel's (:data:`fused.BLOCK_ROWS`, fixed by N), each block's sums go to its own
slot and are added in block order, so the result is the same to the last bit for any number of threads.

The source of each (D, K) kernel is written to a file in :func:`kernel_dir` (named by a hash of the
source) and imported from there, so numba's ``cache=True`` keeps the machine code beside it: a process
compiles a (D, K) only once per machine (a few seconds; the benchmark reports it apart).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib.util
import math
import os
import re
import shutil
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
# Bytes of scratch per thread at most (see source), and the padding of its rows in float64 values.
SCRATCH_BYTES = 16 * 1024
ROW_PADDING = 8
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
        return _process_kernel_dir()


@functools.cache
def _process_kernel_dir() -> Path:
    """One temporary folder per process for the kernels when no cache folder can be written, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="emvsbayes-kernels-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def design_entries(d: int) -> list[tuple[int, ...]]:
    """The design [1, z_a, z_a z_b (a <= b)] as index tuples: (), (a,), (a, b)."""
    return [(), *((a,) for a in range(d)), *((a, b) for a in range(d) for b in range(a, d))]


def tiles(n_components: int, n_design: int) -> list[tuple[list[int], list[int]]]:
    """Loop B's tiles (components, design entries): all components together (at most
    :data:`MAX_COMPONENTS`), design entries in runs, so that a tile has at most about
    :data:`TILE_ACCUMULATORS` accumulators (at least one design entry per tile)."""
    per_k = max(1, TILE_ACCUMULATORS // n_components)
    return [(list(range(n_components)), list(range(f, min(f + per_k, n_design)))) for f in range(0, n_design, per_k)]


def _views(body: list[str], rows: int) -> list[str]:
    """``body`` with each ``work[OFFSET + i]`` read through a view ``w_OFFSET = work[OFFSET:OFFSET + rows]``
    made before it: indexed by ``i`` alone, LLVM sees contiguous loads and stores (``OFFSET + i`` kept numba's
    check for negative indices in the way, and LLVM made gathers of it)."""
    offsets = sorted({int(found) for line in body for found in re.findall(r"work\[(\d+) \+ i\]", line)})
    views = [f"w_{offset} = work[{offset}:{offset + rows}]" for offset in offsets]
    return views + [re.sub(r"work\[(\d+) \+ i\]", r"w_\1[i]", line) for line in body]


#: the digest of fused.py, whose functions every generated kernel inlines
FUSED_DIGEST = hashlib.sha256(Path(__file__).with_name("fused.py").read_bytes()).hexdigest()[:16]


def source(d: int, k: int, block_rows: int) -> str:
    """The Python source of the (D, K) kernel module (see the module docstring), for blocks of
    ``block_rows`` rows."""
    entries = design_entries(d)
    # The scratch holds a part of a block at a time: ``rows`` rows, so that it stays within about
    # SCRATCH_BYTES (two threads on one core, two vCPUs here, share its L1 cache; with a 45 kB scratch per
    # thread each took 2.7x the CPU time it took alone, AVX2 code, D = 2, K = 3).
    n_rows = d + 2 * k + 3
    rows = block_rows
    while rows > 32 and n_rows * (rows + ROW_PADDING) * 8 > SCRATCH_BYTES:
        rows //= 2
    # One flat scratch per thread, rows of ``block_rows`` at offsets written into the source as constants:
    # the block's z (D rows), responsibilities (K), largest scores, totals, and s_k - m (K, kept only when
    # asked for). One base pointer with constant offsets lets LLVM prove loads and stores independent; as
    # separate arrays it needed a runtime overlap check per pair and gave up vectorising.
    # Rows of the scratch ROW_PADDING values (one cache line) longer than a block: at 512 rows, 4 kB apart,
    # the i-th values of all rows fell into one set of the L1 cache, which two threads on one core (two
    # vCPUs here) overflowed: with AVX2 code each thread then took 2.7x the CPU time it took alone.
    stride = rows + ROW_PADDING
    z_at = {a: a * stride for a in range(d)}
    r_at = {j: (d + j) * stride for j in range(k)}
    ref_at, mant_at, expo_at = (d + k) * stride, (d + k + 1) * stride, (d + k + 2) * stride
    s_at = {j: (d + k + 3 + j) * stride for j in range(k)}
    # every total's mantissa in [1, 2): their product over a block stays below 2^block_rows
    assert rows < 1000, "a part's product of mantissas must not overflow"
    lines = [
        f'"""Generated by emvsbayes.gaussian.fused_unrolled for D = {d}, K = {k}, blocks of {rows} rows;',
        'do not edit."""',
        # numba's cache keeps the functions inlined from fused.py without noticing a change there: its digest
        # in the source names a new file (and so a new compile) whenever it changes
        f"# emvsbayes/gaussian/fused.py sha256 {FUSED_DIGEST}",
        "import math",
        "import numba",
        "import numpy as np",
        "from emvsbayes.gaussian.fused import binary_exponent, exp_bounded, exp_le0, mantissa",
        "",
        f"SCRATCH = {(d + 2 * k + 3) * stride}",
        f"PART_ROWS = {rows}",
        f"EXPONENTS_AT = {expo_at}",
        "LN2 = math.log(2.0)",
        "# log2 of exp(EXP_CEILING), rounded down: a block with a total this large takes scores_shifted",
        f"TOO_LARGE = {math.floor(350.0 / math.log(2.0))}.0",
        "",
        "",
    ]
    setup = []
    for a in range(d):
        setup += [f"z{a}_block = z_t[{a}, start:start + n]", "for i in range(n):",
                  f"    work[{z_at[a]} + i] = z{a}_block[i]"]
    for j in range(k):
        setup.append(f"b{j} = base[{j}]")
        for a in range(d):
            setup.append(f"m{j}_{a} = mu[{j}, {a}]")
            for b in range(a + 1):
                setup.append(f"u{j}_{a}_{b} = u_t[{j}, {a}, {b}]")
    setup.append("for i in range(n):")
    row = [f"z{a} = work[{z_at[a]} + i]" for a in range(d)]
    for j in range(k):
        row += [f"d{a} = z{a} - m{j}_{a}" for a in range(d)]
        for a in range(d):
            terms = " + ".join(f"u{j}_{a}_{b} * d{b}" for b in range(a + 1))
            row.append(f"y = {terms}")
            row.append("q = y * y" if a == 0 else "q += y * y")
        row.append(f"s{j} = b{j} - 0.5 * q")
    # scores_relative: relative to component 0 (its exponential is 1: K - 1 exponentials per row);
    # scores_shifted: relative to the largest (K exponentials), for blocks where the first overflows its range.
    relative = ["ref = s0"]
    relative += [f"e{j} = exp_bounded(s{j} - ref)" for j in range(1, k)]
    relative.append("t = 1.0" + "".join(f" + e{j}" for j in range(1, k)))
    relative.append("inv = 1.0 / t")
    relative.append(f"work[{r_at[0]} + i] = inv")
    relative += [f"work[{r_at[j]} + i] = e{j} * inv" for j in range(1, k)]
    shifted = ["ref = s0"] + [f"ref = max(ref, s{j})" for j in range(1, k)]
    shifted += [f"e{j} = exp_le0(s{j} - ref)" for j in range(k)]
    shifted.append("t = " + " + ".join(f"e{j}" for j in range(k)))
    shifted.append("inv = 1.0 / t")
    shifted += [f"work[{r_at[j]} + i] = e{j} * inv" for j in range(k)]
    tail = [f"work[{ref_at} + i] = ref", f"work[{mant_at} + i] = mantissa(t)",
            f"work[{expo_at} + i] = binary_exponent(t)", "if keep_log_resp:"]
    keep = [f"work[{s_at[j]} + i] = s{j} - ref" for j in range(k)]
    for name, variant in (("scores_relative", relative), ("scores_shifted", shifted)):
        body = setup + ["    " + line for line in row + variant + tail] + ["        " + line for line in keep]
        lines += ["@numba.njit(cache=True, nogil=True, error_model='numpy', fastmath={'contract'})",
                  f"def {name}(z_t, start, n, mu, u_t, base, work, keep_log_resp):"]
        lines += ["    " + line for line in _views(body, rows)]
        lines += ["", ""]
    # loop B, one function per tile (each a reduction loop LLVM vectorises with reassociation)
    # With ``_centred``, each component's sums are of its rows about ``shift[j]`` (z - shift_j and its
    # products, formed per component): for components so narrow that sums about 0 would cancel
    # (``estep_fast.shifted``). A separate set, compiled only when first needed.
    tile_names = {"": [], "_centred": []}
    for suffix in tile_names:
        for number, (group, features) in enumerate(tiles(k, len(entries))):
            name = f"tile{number}{suffix}"
            tile_names[suffix].append(name)
            needed = sorted({a for f in features for a in entries[f]})
            lines += ["@numba.njit(cache=True, nogil=True, fastmath={'reassoc', 'contract'})",
                      f"def {name}(work, n, shift, out):"]
            tb = [f"a{j}_{f} = 0.0" for j in group for f in features]
            if suffix:
                tb += [f"c{j}_{a} = shift[{j}, {a}]" for j in group for a in needed]
            tb.append("for i in range(n):")
            inner = [f"z{a} = work[{z_at[a]} + i]" for a in needed]
            inner += [f"r{j} = work[{r_at[j]} + i]" for j in group]
            # the design's variables: shared by all components, or per component about its shift
            owners = group if suffix else [None]
            for j in owners:
                tag = "" if j is None else f"_{j}"
                if j is not None:
                    inner += [f"y{a}{tag} = z{a} - c{j}_{a}" for a in needed]
                var = "z" if j is None else "y"
                for f in features:
                    entry = entries[f]
                    if len(entry) == 2:
                        inner.append(f"p{f}{tag} = {var}{entry[0]}{tag} * {var}{entry[1]}{tag}")
            for j in group:
                tag, var = ("", "z") if not suffix else (f"_{j}", "y")
                for f in features:
                    entry = entries[f]
                    factor = "" if not entry else f" * {var}{entry[0]}{tag}" if len(entry) == 1 else f" * p{f}{tag}"
                    inner.append(f"a{j}_{f} += r{j}{factor}")
            tb += ["    " + line for line in inner]
            tb += [f"out[{j}, {f}] += a{j}_{f}" for j in group for f in features]
            lines += ["    " + line for line in _views(tb, rows)] + ["", ""]
    lines += [
        "@numba.njit(cache=True, nogil=True, fastmath={'reassoc', 'contract'})",
        "def row_sum(work, start, stop):",
        "    values = work[start:stop]",
        "    acc = 0.0",
        "    for i in range(stop - start):",
        "        acc += values[i]",
        "    return acc",
        "",
        "",
        "# a count, not a maximum: LLVM vectorises this sum (numba's max() kept the loop scalar, 1 ns a row)",
        "@numba.njit(cache=True, nogil=True, fastmath={'reassoc', 'contract'})",
        "def count_at_least(work, start, stop, threshold):",
        "    values = work[start:stop]",
        "    acc = 0.0",
        "    for i in range(stop - start):",
        "        acc += 1.0 if values[i] >= threshold else 0.0",
        "    return acc",
        "",
        "",
        "@numba.njit(cache=True, nogil=True, fastmath={'reassoc', 'contract'})",
        "def row_product(work, start, stop):",
        "    values = work[start:stop]",
        "    acc = 1.0",
        "    for i in range(stop - start):",
        "        acc *= values[i]",
        "    return acc",
        "",
        "",
    ]
    for suffix, names in tile_names.items():
        lines += [
            "@numba.njit(cache=True, nogil=True)",
            f"def stripe{suffix}(z_t, mu, u_t, base, block_rows, group_rows, first, last, log_resp_t, keep_log_resp,",
            "            block_sums, objectives, shift):",
            "    n_samples = z_t.shape[1]",
            "    work = np.empty(SCRATCH)",
            "    for blk in range(first, last):",
            f"        first_row = blk * {block_rows}",
            f"        block_end = min(first_row + {block_rows}, n_samples)",
            "        out = block_sums[blk]",
            "        out[:, :] = 0.0",
            "        objective = 0.0",
            f"        for start in range(first_row, block_end, {rows}):",
            f"            n = min({rows}, block_end - start)",
            "            scores_relative(z_t, start, n, mu, u_t, base, work, keep_log_resp)",
            f"            if count_at_least(work, {expo_at}, {expo_at} + n, TOO_LARGE) > 0.0:",
            "                scores_shifted(z_t, start, n, mu, u_t, base, work, keep_log_resp)",
            *[f"            {name}(work, n, shift, out)" for name in names],
            "            # sum_i log p(z_i) = sum_i (ref_i + log t_i), log t_i = log mantissa_i + exponent_i log 2",
            f"            objective += row_sum(work, {ref_at}, {ref_at} + n) + LN2 * row_sum(work, {expo_at}, {expo_at} + n)",
            f"            objective += math.log(row_product(work, {mant_at}, {mant_at} + n))",
            "            if keep_log_resp:",
            "                for i in range(n):",
            f"                    log_total = math.log(work[{mant_at} + i]) + LN2 * work[{expo_at} + i]",
            *[f"                    log_resp_t[{j}, start + i] = work[{s_at[j]} + i] - log_total" for j in range(k)],
            "        objectives[blk] = objective",
            "",
            "",
            "@numba.njit(cache=True, parallel=True)",
            f"def all_blocks_parallel{suffix}(z_t, mu, u_t, base, block_rows, group_rows, n_stripes, log_resp_t,",
            "                        keep_log_resp, block_sums, objectives, shift):",
            "    n_blocks = block_sums.shape[0]",
            "    for part in numba.prange(n_stripes):",
            f"        stripe{suffix}(z_t, mu, u_t, base, block_rows, group_rows, part * n_blocks // n_stripes,",
            "               (part + 1) * n_blocks // n_stripes, log_resp_t, keep_log_resp, block_sums, objectives, shift)",
            "",
            "",
            "@numba.njit(cache=True, nogil=True)",
            f"def all_blocks_serial{suffix}(z_t, mu, u_t, base, block_rows, group_rows, n_stripes, log_resp_t,",
            "                      keep_log_resp, block_sums, objectives, shift):",
            f"    stripe{suffix}(z_t, mu, u_t, base, block_rows, group_rows, 0, block_sums.shape[0], log_resp_t,",
            "           keep_log_resp, block_sums, objectives, shift)",
            "",
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
