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

from emvsbayes.study.run import StudyOutcome, assemble, read_study, run_study
from emvsbayes.study.spec import cells, load_study_spec

__all__ = ["StudyOutcome", "assemble", "cells", "load_study_spec", "read_study", "run_study"]


class _CallableModule(types.ModuleType):
    """This package, callable as :func:`emvsbayes.api.study`."""

    def __call__(self, spec, client=None, *, out=None, progress=None):
        from emvsbayes.api import study

        return study(spec, client, out=out, progress=progress)


sys.modules[__name__].__class__ = _CallableModule
