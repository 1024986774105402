"""Keep xarray from importing Dask in a process that does not use Dask (every ``emvsbayes run``).

xarray imports Dask the first time it builds a variable (to ask whether the data are a Dask array or
collection) and dask.distributed the first time it writes a file (to ask whether a Dask cluster is
running): 1-2 s of a run's start-up on this machine, for a run that uses no Dask. While Dask is not
imported these answers are known without importing it: no object is a Dask array or collection before
Dask is imported, and no Dask scheduler is active. Once Dask is imported (studies, Dask arrays), xarray asks it as
before. With another xarray layout nothing is changed: xarray then imports Dask as it always did.
"""

from __future__ import annotations

import sys


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
