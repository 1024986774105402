"""emvsbayes: fit the same mixture model by hand-written EM and by PyMC, and compare the two.

The package is laid out by what each part is:

- ``emvsbayes.em``: the one EM loop (stopping, trace, restarts) shared by every model family;
- ``emvsbayes.coins``, ``emvsbayes.gaussian``: one package per model family, each with ``model``
  (the single definition both engines read), ``em`` (E-step / M-step), ``bayes`` (the PyMC model);
- ``emvsbayes.labels``: label-switching functions over arrays of draws;
- ``emvsbayes.data``: bundled data sets, CSV loading and simulation;
- ``emvsbayes.results``: the xarray edge, writing and reading ``results.nc``;
- ``emvsbayes.report``: the HTML report, which reads only the results file;
- ``emvsbayes.spec``, ``emvsbayes.pipeline``, ``emvsbayes.cli``: specs, the run, the command line.
"""

__version__ = "0.1.0"
