"""Simulation studies: a grid of settings, replicates with known truth, run on Dask.

- :mod:`~emvsbayes.study.spec`: study specs (TOML) and their one-line errors;
- :mod:`~emvsbayes.study.replicate`: one replicate as a pure function of (spec, cell, replicate);
- :mod:`~emvsbayes.study.sbc`: simulation-based calibration (rank statistics, uniformity test);
- :mod:`~emvsbayes.study.run`: execution on ``dask.distributed``, the store, resume, ``study.nc``;
- :mod:`~emvsbayes.study.report`: the HTML page, from ``study.nc`` alone.
"""

from emvsbayes.study.run import StudyOutcome, assemble, read_study, run_study
from emvsbayes.study.spec import cells, load_study_spec

__all__ = ["StudyOutcome", "assemble", "cells", "load_study_spec", "read_study", "run_study"]
