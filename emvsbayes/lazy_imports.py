"""Keep libraries from importing what a command does not use; :func:`install` applies all of it.

**Dask.** xarray imports Dask the first time it builds a variable (to ask whether the data are a Dask
array or collection) and dask.distributed the first time it writes a file (to ask whether a Dask
cluster is running): 1-2 s of a run's start-up on this machine, for a run that uses no Dask. While Dask
is not imported these answers are known without importing it: no object is a Dask array or collection
before Dask is imported, and no Dask scheduler is active. Once Dask is imported (studies, Dask arrays),
xarray asks it as before. With another xarray layout nothing is changed: xarray then imports Dask as
it always did.

**JAX and numpyro.** arviz-base puts lazy placeholders for ``jax`` and ``numpyro`` into ``sys.modules``
(for its ``from_numpyro``); matplotlib and SciPy look there to ask "is this a JAX array?" and so import
JAX (1-3 s) in every process that draws a figure or calls ``logsumexp`` after ArviZ was imported, e.g.
``emvsbayes report``. Right after arviz-base is imported, its two placeholders are replaced by proxies
that import the real module when arviz-base uses it, and the unloaded placeholders are taken out of
``sys.modules``; ``import jax`` then imports JAX as usual, once.

**Running code after an import.** :func:`run_after_import` (a ``sys.meta_path`` entry): e.g. ``--quiet``
quietens PyMC's logger after PyMC is imported, which sets its level then.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys


def install() -> None:
    """Everything above; call before xarray builds its first variable (else the Dask part is a no-op)."""
    defer_dask_in_xarray()
    keep_jax_out_of_arviz()


def run_after_import(name: str, function) -> None:
    """Call ``function(module)`` right after module ``name`` is first imported (at once if it is already)."""
    if name in sys.modules:
        function(sys.modules[name])
    elif not any(isinstance(entry, _AfterImport) and (entry.name, entry.function) == (name, function)
                 for entry in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, function))


class _AfterImport:
    """A ``sys.meta_path`` entry that runs a function right after a module is imported, once."""

    def __init__(self, name: str, function):
        self.name, self.function = name, function

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)  # once; and so that the lookup below finds the module itself
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module, function = spec.loader.exec_module, self.function

        def exec_then_call(module):
            exec_module(module)
            function(module)

        spec.loader.exec_module = exec_then_call
        return spec


class _ImportOnUse:
    """Stands for a module; imports it (the usual way) on the first attribute asked for."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)


def _replace_placeholders(arviz_base) -> None:
    io_numpyro = sys.modules.get("arviz_base.io_numpyro")
    lazy = getattr(importlib.util, "_LazyModule", None)
    for name in ("jax", "numpyro"):
        placeholder = getattr(io_numpyro, name, None)
        if lazy is not None and type(placeholder) is lazy and sys.modules.get(name) is placeholder:
            setattr(io_numpyro, name, _ImportOnUse(name))
            del sys.modules[name]


def keep_jax_out_of_arviz() -> None:
    run_after_import("arviz_base", _replace_placeholders)


class _DaskWhenImported:
    """xarray's record of the ``dask`` duck-array module, filled in only once Dask is imported."""

    def __init__(self, pycompat):
        self._pycompat = pycompat
        self._record = None

    def _loaded(self):
        if self._record is None:
            self._record = self._pycompat.DuckArrayModule("dask")
        return self._record

    @property
    def type(self):
        return self._loaded().type if "dask.array" in sys.modules else ()

    def __getattr__(self, name):  # module, version, available: as xarray finds them (imports Dask)
        return getattr(self._loaded(), name)


def _scheduler_when_dask_imported(get_dask_scheduler):
    def scheduler(get=None, collection=None):
        # None: "no Dask scheduler is active", xarray's own answer without Dask (same locks as "threaded").
        return get_dask_scheduler(get, collection) if "dask" in sys.modules else None

    return scheduler


def _available_when_imported(module_available):
    def available(module, minversion=None):
        return False if module == "dask" and "dask" not in sys.modules else module_available(module, minversion)

    return available


def defer_dask_in_xarray() -> None:
    """Apply the above to the imported xarray; call before xarray builds its first variable (else no-op)."""
    try:
        from xarray.backends import locks, writers
        from xarray.namedarray import pycompat, utils

        cache = pycompat._cached_duck_array_modules
        original = locks.get_dask_scheduler
        assert writers.get_dask_scheduler is original and callable(pycompat.DuckArrayModule)
        assert callable(utils.module_available) and callable(utils.is_dask_collection)
    except (ImportError, AttributeError, AssertionError):
        return
    if "dask" in sys.modules or "dask" in cache:
        return
    cache["dask"] = _DaskWhenImported(pycompat)
    locks.get_dask_scheduler = writers.get_dask_scheduler = _scheduler_when_dask_imported(original)
    # read by utils.is_dask_collection only (the other modules bound their own module_available)
    utils.module_available = _available_when_imported(utils.module_available)


class _LazyModule:
    """A module imported on first attribute access (:func:`lazy_module`)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str) -> _LazyModule:
    """``name``, imported when one of its attributes is first used: a model family's ``family`` module is
    read by spec checks and data loading, which must not import SciPy or PyMC before a bad input exits."""
    return _LazyModule(name)
