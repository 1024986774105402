"""emvsbayes: fit the same mixture model by hand-written EM and by PyMC, and compare the two.

The package is laid out in layers; a module imports only from its own layer or lower ones, never in a
circle (``tests/test_layering.py`` checks both, and that no private name crosses a module boundary):

0. foundations: ``emvsbayes.errors``, ``emvsbayes.paths``, ``emvsbayes.lazy_imports``, ``emvsbayes.seeds``
   (one seed scheme for runs and studies), ``emvsbayes.cluster`` (the Dask cluster of studies and chunked EM);
1. the numerical core and the edges, knowing no model family: ``emvsbayes.em`` (the one EM loop and
   restart rule), ``emvsbayes.family`` (the family protocol and registry), ``emvsbayes.data`` (bundled
   data, CSV, simulation), ``emvsbayes.labels`` (label switching over arrays of draws),
   ``emvsbayes.sampling`` (the samplers), ``emvsbayes.spec``, ``emvsbayes.spec_keys``,
   ``emvsbayes.study.spec`` (specs), ``emvsbayes.results`` (the xarray edge: ``results.nc``,
   ``study.nc``), ``emvsbayes.outputs`` (output folders), ``emvsbayes.limits`` (size checks);
2. generic statistics taking a family: ``emvsbayes.uncertainty`` (standard errors from the family's
   symbolic log-likelihood, bootstrap, model-choice criteria), ``emvsbayes.comparison`` (result groups);
3. the model families, one package each, with a ``family`` module defining ``FAMILY``:
   ``emvsbayes.coins``, ``emvsbayes.gaussian``, ``emvsbayes.poisson``, ``emvsbayes.hmm`` (``model``: the
   definition both engines read; ``em``: E-step / M-step; ``bayes``: the PyMC model), and
   ``emvsbayes.ladder`` (the uncertainty ladder's rungs between EM and NUTS: MAP-EM, Laplace, ADVI, the
   Bayesian bootstrap, label-free partitions);
4. one fit of any family: ``emvsbayes.runner`` (a run's groups), ``emvsbayes.store`` (a run's EM on a
   Zarr store by chunks, for a family with chunked EM), ``emvsbayes.study.replicate``,
   ``emvsbayes.study.sbc``, ``emvsbayes.study.task`` (a study's replicates);
5. orchestration and presentation: ``emvsbayes.pipeline`` (a run, its files), ``emvsbayes.study.run``,
   ``emvsbayes.study.report``, ``emvsbayes.study``, ``emvsbayes.report`` (the HTML report, which reads
   only the results file);
6. the entry points: ``emvsbayes.api`` (the Python API below), ``emvsbayes.cli``, ``emvsbayes.__main__``.

A new model family is its own package plus one line in ``emvsbayes.family.FAMILIES``; it is done when
``tests/test_family_contract.py`` passes for it.

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
