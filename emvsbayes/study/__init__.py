"""Simulation studies: a grid of settings, replicates with known truth, run on Dask.

- :mod:`~emvsbayes.study.spec`: study specs (TOML) and their one-line errors;
- :mod:`~emvsbayes.study.replicate`: one replicate as a pure function of (spec, cell, replicate);
- :mod:`~emvsbayes.study.sbc`: simulation-based calibration (rank statistics, uniformity test);
- :mod:`~emvsbayes.study.run`: execution on ``dask.distributed``, the store, resume, ``study.nc``;
- :mod:`~emvsbayes.study.report`: the HTML page, from ``study.nc`` alone.

The package is also the Python API's entry point: ``emvsbayes.study(spec, client=None, out=None)``
runs a study (see :func:`emvsbayes.api.study`). A package and a function cannot share the name
``emvsbayes.study`` (importing the package sets the attribute), so the package itself is callable.
"""

import sys
import types

__all__ = ["StudyOutcome", "assemble", "cells", "load_study_spec", "read_study", "run_study"]

# Where each name is defined. Imported when first asked for, not with the package: a Dask worker imports
# the package to run one replicate (emvsbayes.study.task) and needs neither xarray (study.run) nor the
# spec reader.
_HOMES = {"StudyOutcome": "run", "assemble": "run", "read_study": "run", "run_study": "run",
          "cells": "spec", "load_study_spec": "spec"}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"emvsbayes.study.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _CallableModule(types.ModuleType):
    """This package, callable as :func:`emvsbayes.api.study`."""

    def __call__(self, spec, client=None, *, out=None, progress=None):
        from emvsbayes.api import study

        return study(spec, client, out=out, progress=progress)


sys.modules[__name__].__class__ = _CallableModule
