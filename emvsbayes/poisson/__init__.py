"""Poisson mixtures of counts: K rates and their weights, fitted by EM and by PyMC from one definition.

``model`` (the parameters and the model definition), ``em`` (closed-form soft and hard EM, starts, batched
fits), ``bayes`` (the PyMC model, its starting values, membership probabilities per draw) and ``family``
(the module-level ``FAMILY``: every member of the family protocol).
"""
