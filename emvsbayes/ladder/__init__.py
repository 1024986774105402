"""The uncertainty ladder (issue 20): the methods between EM's point and the full posterior, one rung each.

Every rung is family-agnostic (it takes a PyMC model, an EM refit function, or draws) with a numpy core
and an xarray edge, and states in ``ASSUMES`` what it assumes, one sentence the report shows:

- :mod:`~emvsbayes.ladder.laplace`: a Gaussian at the posterior mode on the unconstrained scale;
- :mod:`~emvsbayes.ladder.vi`: ADVI (mean-field, full-rank) with PyMC's ``pm.fit``, and PSIS's Pareto k;
- :mod:`~emvsbayes.ladder.partition`: co-clustering matrices and a point partition with its credible ball;
- :mod:`~emvsbayes.ladder.bayesian_bootstrap`: EM refits with Dirichlet(1, ..., 1) row weights;
- :mod:`~emvsbayes.ladder.map_em`: EM for the posterior mode under the PyMC model's priors (the family's ``map_fit``);
- :mod:`~emvsbayes.ladder.results`: the ``uncertainty_ladder`` and ``coclustering`` results groups;
- :mod:`~emvsbayes.ladder.build`: :func:`~emvsbayes.ladder.build.run_ladder`, the rungs for one data set through
  the family protocol's names, giving both groups (rendered by :mod:`emvsbayes.report.ladder`).

Submodules are imported on use (PyMC and ArviZ are slow to import).
"""
