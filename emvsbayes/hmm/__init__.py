"""The hidden Markov model family (Poisson or 1-D Gaussian emissions; initial distribution estimated or the
chain's stationary one).

- ``model``: :class:`~emvsbayes.hmm.model.HMMParams` and :class:`~emvsbayes.hmm.model.HiddenMarkovModel`, the one
  definition both engines read;
- ``inference``: the numpy core, forward-backward (blocked, scaled), filtering, Viterbi;
- ``em``: Baum-Welch and Viterbi training as E-steps and M-steps around :func:`emvsbayes.em.fit_em`, random
  starts, restarts grouped into distinct optima up to relabelling;
- ``bayes``: the PyMC model with the states summed out by a forward-algorithm scan, chain starts from EM,
  state probabilities and one-step-ahead predictive densities per draw;
- ``series``: the data record (a time series) and its loading with the checks a series needs;
- ``family``: :data:`~emvsbayes.hmm.family.FAMILY`, the family protocol object;
- ``report``: the family's figures, drawn from a results tree.
"""
