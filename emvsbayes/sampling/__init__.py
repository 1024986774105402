"""Sampling a PyMC model's posterior the same way for every model family, from EM answers.

The default (``sampler = "auto"``) is numpyro's NUTS on the PyMC model's JAX log-density
(:mod:`emvsbayes.sampling.numpyro_nuts`), whose programs are exported once per model and kept on disk
(:mod:`emvsbayes.sampling.programs`), so a later process loads them without PyMC, numpyro or tracing.
nutpie and PyMC's own NUTS run through ``pm.sample`` (:mod:`emvsbayes.sampling.pymc_nuts`). Every
sampler starts its chains at EM answers without jitter. ``benchmarks/samplers.py`` measures them
against Stan: numpyro samples fastest per second on the Gaussian models and has the shortest whole
process (nutpie rebuilds numba wrappers for ~7 s in every process; PyMC's NUTS samples 3-10x slower).

A model is given as a ``pymc.Model`` or as a :class:`~emvsbayes.sampling.recipe.ModelRecipe` (the
function that builds it and its arguments): only a recipe's programs can be found again by a later
process, because only a recipe says what the model is before it is built.

:mod:`emvsbayes.sampling.convergence` computes rank-normalised R-hat and bulk ESS in numpy alone (ArviZ's
numbers), for a study's workers, which would otherwise import ArviZ, xarray and pandas for two numbers.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from emvsbayes.sampling.recipe import ModelRecipe, as_recipe

SAMPLERS = ("numpyro", "nutpie", "pymc")
#: What ``sampler = "auto"`` means (see the module docstring for the measurements behind it).
DEFAULT_SAMPLER = "numpyro"
#: NUTS's target acceptance rate unless a mixture component holds few points: Stan's and PyMC's default.
TARGET_ACCEPT = 0.8
#: ... and where one does (``target_accept = "auto"``). A component with few points has a poorly
#: determined scale, and the spread of its mean shrinks with that scale: a funnel, where 0.8's step
#: size diverges and chains stall. Measured (benchmarks/README.md): galaxies K = 3 (components of
#: ~3 and ~7 points), ordered, 4 seeds x 2 tuning lengths: 0.8 gave R-hat 1.006-1.085 and 4-127
#: divergences, 0.95 gave 1.003-1.013 and 0-2; Old Faithful K = 2 (~100 points each) mixes as well at
#: 0.8 as at 0.95 with 7 leapfrog steps per draw instead of 12, so 0.95 there would only cost time.
TARGET_ACCEPT_FEW_POINTS = 0.95
#: A component whose expected number of points (EM weight x N) is below this counts as having few.
FEW_POINTS = 30
#: Virtual XLA CPU devices, so numpyro runs up to this many chains in parallel, one per device.
JAX_DEVICES = 8
#: The XLA flag that sets the number of CPU devices (a user's ``XLA_FLAGS`` may hold it already).
DEVICE_COUNT_FLAG = "xla_force_host_platform_device_count"
#: Most CPU devices accepted from ``XLA_FLAGS``: XLA makes each device with its own threads and memory, and
#: chains beyond the cores gain nothing.
MAX_DEVICES = 1024


def devices_in_environment() -> int | None:
    """The CPU device count ``XLA_FLAGS`` sets, ``None`` if it sets none.

    Checked before any work (:func:`emvsbayes.pipeline.run_spec`, studies): XLA reads the flag only when JAX
    first starts its backend, after EM, and meets a value that is not a whole number >= 1 by printing its
    whole list of flags and exiting, or by failing to start ("Unable to initialize backend 'cpu'").
    """
    from emvsbayes.errors import UserError

    given = re.findall(rf"(?:^|\s)--?{DEVICE_COUNT_FLAG}(?:=(\S*))?(?=\s|$)", os.environ.get("XLA_FLAGS", ""))
    if not given:
        return None
    value = given[-1]
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_DEVICES):
        raise UserError(f"XLA_FLAGS sets --{DEVICE_COUNT_FLAG}={value}, which is not a number of CPU devices from 1 "
                        f"to {MAX_DEVICES:,}; give one (emvsbayes uses {JAX_DEVICES} when XLA_FLAGS leaves it out) or "
                        "remove it from XLA_FLAGS")
    return int(value)


#: JAX's own variables that :func:`configure_jax` sets when unset (to 0: cache every program, however small and
#: quick to compile), and how a value is read.
JAX_CACHE_VARIABLES = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": ("a number of seconds", float),
                       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": ("a whole number of bytes", int)}


def check_compiler_environment() -> None:
    """Refuse, before any work, the environment variables the compilers read that would stop a run after EM:
    JAX's (``XLA_FLAGS``'s device count, :func:`devices_in_environment`, unknown XLA flags, ``JAX_*`` values JAX
    cannot read, the persistent cache's thresholds), PyTensor's flags, and the cache folders the run writes in."""
    from emvsbayes.errors import UserError

    devices_in_environment()
    _check_cache_folders()
    _check_compiler_flags()
    _check_jax_variables()
    for name, (what, read) in JAX_CACHE_VARIABLES.items():
        value = os.environ.get(name)
        if value is None:
            continue
        try:
            number = read(value)
        except ValueError:
            number = None
        if number is None or number != number or abs(number) == float("inf"):
            raise UserError(f"{name}={value!r} is not {what}; give one, or unset it (emvsbayes then uses 0: "
                            "every compiled program cached)")


def _check_cache_folders() -> None:
    """The folders compiled samplers are kept in (``EMVSBAYES_PROGRAM_CACHE_DIR``, ``JAX_COMPILATION_CACHE_DIR``,
    else under ``XDG_CACHE_HOME``): one that is a file, or lies under one, is refused (each program printed two
    warnings, every run compiled everything again, and the run still ended as if nothing were wrong)."""
    from emvsbayes.errors import UserError
    from emvsbayes.paths import not_a_folder_above

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for variable, default, held in (
            ("EMVSBAYES_PROGRAM_CACHE_DIR", os.path.join(base, "emvsbayes", "programs"), "the compiled samplers"),
            ("JAX_COMPILATION_CACHE_DIR", os.path.join(base, "emvsbayes", "jax"), "the compiled samplers"),
            # matplotlib's own folder: a file there printed its two-line warning on every run
            ("MPLCONFIGDIR", None, "matplotlib's settings and font cache")):
        given = os.environ.get(variable)
        folder = given or default
        problem = None if folder is None else not_a_folder_above(os.path.join(folder, "x"))
        if problem is None:
            continue
        named = f"{variable}={given!r}" if given else f"XDG_CACHE_HOME={os.environ.get('XDG_CACHE_HOME')!r}" \
            if os.environ.get("XDG_CACHE_HOME") else "the cache folder ~/.cache"
        raise UserError(f"{named} cannot hold {held} ({problem}); point it at a folder")


def _check_compiler_flags() -> None:
    """``PYTENSOR_FLAGS`` items that are no key=value setting are refused. XLA reads ``XLA_FLAGS`` when JAX starts
    its backend (after EM) and meets a flag it does not know, or a word that is no flag (read as a file of flags), by
    ending the process (exit 1, one line of its own log, the run's folder left locked). A word that is no ``--flag``
    is refused here; other flags than the device count are tried in a child process (about a second, only when
    XLA_FLAGS holds them)."""
    import subprocess

    from emvsbayes.errors import UserError

    # PyTensor's flags are key=value items separated by commas; an item without "=" was a two-line warning
    odd = next((item for item in os.environ.get("PYTENSOR_FLAGS", "").split(",") if item.strip() and "=" not in item),
               None)
    if odd is not None:
        raise UserError(f"PYTENSOR_FLAGS holds {odd.strip()!r}, which is no setting; write key=value items separated "
                        "by commas (e.g. PYTENSOR_FLAGS=base_compiledir=/tmp/pt), or unset it")
    words = os.environ.get("XLA_FLAGS", "").split()
    stray = next((word for word in words if not word.startswith("-")), None)
    if stray is not None:
        raise UserError(f"XLA_FLAGS holds {stray!r}, which is no flag (XLA would read it as a file of flags); write "
                        "flags as --name=value, or unset XLA_FLAGS")
    others = [word for word in words if not re.fullmatch(rf"--?{DEVICE_COUNT_FLAG}(=\S*)?", word)]
    if not others or "jax" in sys.modules and _backend_started():
        return
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    try:
        proc = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env, capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return  # the flags could not be tried: the run finds out as before
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = next((line.split("] ", 1)[-1] for line in lines if "XLA_FLAGS" in line or "flag" in line.lower()),
                      lines[-1] if lines else f"exit status {proc.returncode}")
        raise UserError(f"XLA cannot start with XLA_FLAGS={os.environ['XLA_FLAGS']!r} ({' '.join(reason.split())}); "
                        "fix or remove that flag")


def _backend_started() -> bool:
    """Whether JAX has started its backend in this process (XLA_FLAGS was read then, and passed)."""
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", None))
    except ImportError:
        return False


def _check_jax_variables() -> None:
    """JAX reads its ``JAX_*`` variables when it is imported and raises ValueError on a value it cannot read
    (``JAX_ENABLE_X64=maybe``, ``JAX_TRACEBACK_FILTERING=bogus``): after EM, as an internal error. When any is set
    (beyond those checked here or set by :func:`configure_jax`), JAX is imported now and such a value refused."""
    from emvsbayes.errors import UserError

    own = {*JAX_CACHE_VARIABLES, "JAX_COMPILATION_CACHE_DIR", "JAX_PLATFORMS"}
    given = sorted(name for name in os.environ if name.startswith("JAX_") and name not in own)
    if not given or "jax" in sys.modules:
        return
    try:
        import jax  # noqa: F401
    except ValueError as error:
        text = " ".join(str(error).split())
        named = next((name for name in given if name in text or name.lower() in text.lower()), None)
        fix = f"fix or unset {named}" if named else "fix or unset that JAX_ variable"
        raise UserError(f"JAX cannot read its settings from the environment ({text}); {fix}") from None


def resolve_sampler(name: str) -> str:
    """The sampler a spec's ``sampler`` names: ``"auto"`` -> :data:`DEFAULT_SAMPLER`."""
    return DEFAULT_SAMPLER if name == "auto" else name


def resolve_target_accept(value, fewest_points: float) -> float:
    """A spec's ``target_accept``: a number as given; ``"auto"`` -> :data:`TARGET_ACCEPT_FEW_POINTS` if
    the smallest EM component holds fewer than :data:`FEW_POINTS` points (``fewest_points``), else
    :data:`TARGET_ACCEPT`."""
    if value != "auto":
        return float(value)
    return TARGET_ACCEPT_FEW_POINTS if fewest_points < FEW_POINTS else TARGET_ACCEPT


def configure_jax() -> None:
    """Set JAX up before its first computation: several CPU devices (parallel chains), 64-bit floats
    (PyMC's models are float64; without PyMC imported nobody else sets it) and a persistent
    compilation cache for every program, so a second run of a model loads its compiled sampler
    instead of rebuilding it.

    The cache lives in ``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/emvsbayes/jax``
    (``~/.cache/emvsbayes/jax``). The device count cannot change once JAX has computed anything.
    """
    check_compiler_environment()
    if devices_in_environment() is None:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --{DEVICE_COUNT_FLAG}={JAX_DEVICES}".strip()
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(base, "emvsbayes", "jax")
    # JAX caches only programs that took longer than a second to compile unless told otherwise; the
    # samplers here are many small programs whose compile time adds up.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # PyMC imports part of JAX, which reads its configuration then: set the cache through the config
    # too (the device count is read later, when JAX first starts its backend).
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                      int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))
    try:
        jax.devices()  # starts the backend now (the first computation would): a platform it cannot start is named
    except (RuntimeError, AssertionError) as error:  # JAX asserts when no platform named could start
        from emvsbayes.errors import UserError

        reason = str(error).split(" (you may need", 1)[0].split(" (set JAX_PLATFORMS", 1)[0].strip() or \
            "no platform it names is installed"
        raise UserError(f"JAX cannot start ({reason}; JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', '')!r}); "
                        "unset JAX_PLATFORMS or set it to 'cpu'") from None


@dataclass(frozen=True, slots=True)
class SamplerSettings:
    """How to sample: which sampler, chains, draws after ``tune`` tuning steps, NUTS target acceptance
    (a number: runners turn a spec's ``"auto"`` into one with :func:`resolve_target_accept`)."""

    sampler: str = DEFAULT_SAMPLER
    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    target_accept: float = TARGET_ACCEPT
    cores: int | None = None


@dataclass(frozen=True, slots=True)
class SamplingOutcome:
    """The draws (an ``xarray.DataTree`` as PyMC returns it) and how long each stage took, in seconds.

    ``seconds_sampling``: tuning + draws; ``seconds_total``: the whole call. ``stages`` splits the call
    where the sampler lets us see inside (numpyro: ``build`` = obtaining the programs (loading them,
    or building and storing them) and the start checks, ``compile`` = JAX's tracing, lowering and
    compiling or loading from its cache, ``tune``, ``draws``, ``constrain_and_log_likelihood`` (draws
    back to the model's variables, pointwise log-likelihood); each without the compiling inside it);
    empty otherwise. ``compiled``: how numpyro's programs were obtained (``"loaded"`` from the cache,
    ``"built"``); empty for the other samplers.
    """

    tree: object
    sampler: str
    seconds_sampling: float
    seconds_total: float
    stages: dict = field(default_factory=dict)
    compiled: str = ""


def available_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def sample_posterior(
    model,
    settings: SamplerSettings,
    seed: int,
    initvals: Sequence[dict] | None = None,
    *,
    progressbar: bool = False,
    log_likelihood: bool = True,
    data: Mapping[str, np.ndarray] | None = None,
) -> SamplingOutcome:
    """Sample a model's posterior and add its pointwise log-likelihood.

    Parameters
    ----------
    model
        A :class:`~emvsbayes.sampling.recipe.ModelRecipe` (numpyro's compiled programs are then kept
        on disk and found again by later runs) or a ``pymc.Model``.
    settings
        Sampler choice and sizes.
    seed
        Integer seed for the sampler.
    initvals
        Starting points (constrained values by variable name), one dict per chain (cycled if fewer).
        nutpie uses only the first.
    progressbar
        Show the sampler's progress bar (nutpie and PyMC's NUTS, on a terminal only: it redraws
        with control characters).
    data
        Values for ``pm.Data`` containers of the model (name -> array of the container's shape). numpyro's
        programs then take them as arguments: one program set, compiled once, for every value (the recipe's
        model is built with placeholders of the same shapes). The other samplers set the containers
        (``pm.set_data``) and compile as they always do.
    """
    sampler = resolve_sampler(settings.sampler)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {settings.sampler!r}")
    recipe = as_recipe(model)
    if sampler == "numpyro":
        from emvsbayes.sampling.numpyro_nuts import sample_numpyro

        return sample_numpyro(recipe, settings, seed, initvals or [], log_likelihood, data)
    import numpy as np

    from emvsbayes.sampling.pymc_nuts import sample_pm

    cores = settings.cores or min(settings.chains, available_cores())
    model = recipe.model()
    if data:
        import pymc as pm

        pm.set_data(data, model=model)
    tree, ran, total = sample_pm(model, settings, sampler, seed, initvals or [],
                                 progressbar and sys.stdout.isatty(), log_likelihood, cores)
    seconds_sampling = float(tree["posterior"].attrs.get("sampling_time", np.nan))
    return SamplingOutcome(tree, ran, seconds_sampling, total)


__all__ = ["DEFAULT_SAMPLER", "DEVICE_COUNT_FLAG", "FEW_POINTS", "JAX_CACHE_VARIABLES", "JAX_DEVICES", "MAX_DEVICES", "SAMPLERS", "TARGET_ACCEPT", "TARGET_ACCEPT_FEW_POINTS",
           "ModelRecipe", "SamplerSettings", "SamplingOutcome", "available_cores", "check_compiler_environment", "configure_jax",
           "devices_in_environment",
           "resolve_sampler", "resolve_target_accept", "sample_posterior"]
