"""emvsbayes: fit the same mixture model by hand-written EM and by PyMC, and compare the two.

The package is laid out by what each part is:

- ``emvsbayes.em``: the one EM loop (stopping, trace, restarts) shared by every model family;
- ``emvsbayes.coins``, ``emvsbayes.gaussian``: one package per model family, each with ``model``
  (the single definition both engines read), ``em`` (E-step / M-step), ``bayes`` (the PyMC model);
- ``emvsbayes.labels``: label-switching functions over arrays of draws;
- ``emvsbayes.data``: bundled data sets, CSV loading and simulation;
- ``emvsbayes.results``: the xarray edge, writing and reading ``results.nc``;
- ``emvsbayes.report``: the HTML report, which reads only the results file;
- ``emvsbayes.spec``, ``emvsbayes.pipeline``, ``emvsbayes.cli``: specs, the run, the command line;
- ``emvsbayes.api``: the Python API below.

The Python API (imported on first use, so ``import emvsbayes`` stays cheap)::

    import emvsbayes
    comparison = emvsbayes.compare(x, family="gaussian", components=2, draws=500, seed=1)
    comparison.summary()          # pandas DataFrame, one row per parameter
    comparison.report("out.html") # the same page as 'emvsbayes run'

- :func:`compare`: EM and the posterior on an array, a DataFrame, an xarray object or coin counts;
- :class:`Comparison`: its results (``.results``, the ``results.nc`` tree), ``summary``, ``report``,
  ``save`` and ``to_spec``;
- :func:`load_dataset`, :func:`load_spec`, :func:`run`, :func:`study`;
- :class:`SpecError`: the one exception bad input raises (one line: the problem and the fix).
"""

__version__ = "0.1.0"

__all__ = ["Comparison", "SpecError", "UserError", "__version__", "compare", "load_dataset", "load_spec", "run",
           "study"]

#: public name -> module defining it; imported on first access (PEP 562), so that importing the package
#: loads neither numpy-heavy code nor PyMC, JAX, ArviZ, matplotlib or Dask.
_LAZY = {"Comparison": "emvsbayes.api", "compare": "emvsbayes.api", "load_dataset": "emvsbayes.api",
         "load_spec": "emvsbayes.api", "run": "emvsbayes.api",
         "SpecError": "emvsbayes.errors", "UserError": "emvsbayes.errors"}


def __getattr__(name: str):
    if name == "study":
        # The subpackage, which is callable as emvsbayes.api.study (a function could not keep the name:
        # importing emvsbayes.study.anything sets this attribute to the package).
        import importlib

        return importlib.import_module("emvsbayes.study")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'emvsbayes' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), "UserError" if name == "SpecError" else name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
