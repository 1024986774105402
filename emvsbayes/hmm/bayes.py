"""The hidden Markov model in PyMC: the same model as :mod:`emvsbayes.hmm.model`, the states summed out by
the forward algorithm (no discrete variables to sample).

transition[i] ~ Dirichlet(transition_concentration[i]); initial ~ Dirichlet(initial_concentration), or the
stationary distribution of ``transition`` (a deterministic); Poisson ``rate[k] ~ Gamma(a, b)``, Gaussian
``mu[k] ~ Normal(loc, scale)``, ``sigma[k] ~ HalfNormal(scale)``; the series' log-likelihood
log p(y | parameters) = log sum_z p(y, z) enters as the potential ``loglik``, computed by one Op
(:func:`_forward_loglik_op`: the numpy forward algorithm as value, the smoothed probabilities as gradient,
one ``jax.lax.scan`` on the numpyro path). The symbolic :func:`forward_loglik` (a ``pytensor.scan`` over
time of a log-sum-exp, twice differentiable) gives the family's log-likelihood for the observed information
(:mod:`emvsbayes.hmm.family`). The likelihood is written in numpy (:mod:`emvsbayes.hmm.inference`), in
JAX and symbolically, and tests hold the three equal.

The symmetric variant is exchangeable in the states: its posterior has K! mirror-image modes. The identified
variant orders ``rate`` (``mu``) increasing: a log transform then an ordered one for the positive rates.

Posterior state probabilities per time point come from the draws afterwards, by forward filtering and
backward smoothing per draw in numpy (:func:`state_probabilities`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from emvsbayes.hmm.inference import forward_backward, forward_filter
from emvsbayes.hmm.model import HiddenMarkovModel, HMMParams, emission_names, stationary_distribution


def prior_values(model_def: HiddenMarkovModel, y) -> dict[str, np.ndarray | float]:
    """The priors' numbers for series ``y``: ``transition_concentration`` (K, K), ``initial_concentration``
    (K,), and ``rate_prior`` (shape, rate) or ``mu_loc``, ``mu_scale``, ``sigma_scale``; ``None`` settings
    replaced by the data-scaled defaults of :class:`~emvsbayes.hmm.model.HMMPriors`."""
    y = np.asarray(y, dtype=float)
    k = model_def.n_components
    priors = model_def.priors
    given = priors.transition_concentration
    if given is None:
        concentration = np.ones((k, k)) + k * np.eye(k)
    else:
        concentration = np.broadcast_to(np.asarray(given, dtype=float), (k, k)).copy()
    values: dict = {"transition_concentration": concentration,
                    "initial_concentration": np.full(k, float(priors.initial_concentration))}
    if model_def.emission == "poisson":
        mean = max(float(np.mean(y)), 1e-3)
        values["rate_prior"] = np.asarray(priors.rate_prior if priors.rate_prior is not None else (2.0, 2.0 / mean),
                                          dtype=float)
    else:
        sd = float(np.std(y))
        values["mu_loc"] = float(priors.mu_loc if priors.mu_loc is not None else np.mean(y))
        values["mu_scale"] = float(priors.mu_scale if priors.mu_scale is not None else 2.0 * sd)
        values["sigma_scale"] = float(priors.sigma_scale if priors.sigma_scale is not None else sd)
        if not (values["mu_scale"] > 0 and values["sigma_scale"] > 0):
            raise ValueError("prior scales must be positive (a constant series has sd 0)")
    return values


def forward_loglik(log_initial, log_transition, log_emission):
    """log p(y) as a pytensor scalar: the log-space forward recursion as a ``scan`` over time.

    ``log_initial`` (K,), ``log_transition`` (K, K), ``log_emission`` (T, K), pytensor tensors.
    """
    import pytensor
    import pytensor.tensor as pt

    def step(log_emission_t, log_alpha, log_transition):
        return pt.logsumexp(log_alpha[:, None] + log_transition, axis=0) + log_emission_t

    first = log_initial + log_emission[0]
    alphas = pytensor.scan(step, sequences=[log_emission[1:]], outputs_info=[first], non_sequences=[log_transition],
                           return_updates=False)
    last = pt.switch(pt.eq(log_emission.shape[0], 1), first, alphas[-1])
    return pt.logsumexp(last)


def forward_log_jax(log_initial, log_transition, log_emission):
    """log p(y) in JAX: the log-space forward recursion as one ``jax.lax.scan`` (differentiated by JAX)."""
    import jax
    from jax.scipy.special import logsumexp

    def step(log_alpha, log_emission_t):
        return logsumexp(log_alpha[:, None] + log_transition, axis=0) + log_emission_t, None

    last, _ = jax.lax.scan(step, log_initial + log_emission[0], log_emission[1:])
    return logsumexp(last)


def _forward_loglik_op():
    """The forward algorithm as one PyTensor Op (built on first use: it imports PyTensor).

    Why an Op and not the ``scan`` of :func:`forward_loglik` in the sampled model: PyTensor lowers its scan
    and the scan's symbolic pieces to JAX as a generic loop, whose value and gradient took 4-6x the time of
    the same recursion written as one ``jax.lax.scan`` (measured side by side on the earthquakes, K = 3),
    and NUTS evaluates it thousands of times per chain. The Op's value is the numpy forward algorithm
    (:func:`~emvsbayes.hmm.inference.forward_filter`), its gradient the smoothed probabilities (log p(y) is
    a log-sum-exp over paths of sums of the log inputs, so d/d log_emission[t, k] = P(z_t = k | y),
    d/d log_transition[i, j] = the expected number of i -> j transitions, d/d log_initial[k] = P(z_0 = k | y)),
    and its JAX form :func:`forward_log_jax`. The observed information needs second derivatives, which
    this Op has not: it keeps the symbolic scan.
    """
    global _FORWARD_OP
    if _FORWARD_OP is not None:
        return _FORWARD_OP
    import pytensor.tensor as pt
    from pytensor.graph.basic import Apply
    from pytensor.graph.op import Op
    from pytensor.link.jax.dispatch import jax_funcify

    class ForwardGradient(Op):
        """(P(z_0 | y) (K,), expected transitions (K, K), P(z_t | y) (T, K)) from the log inputs."""

        __props__ = ()

        def make_node(self, log_initial, log_transition, log_emission):
            inputs = [pt.as_tensor_variable(v).astype("float64") for v in (log_initial, log_transition, log_emission)]
            return Apply(self, inputs, [pt.dvector(), pt.dmatrix(), pt.dmatrix()])

        def perform(self, node, inputs, outputs):
            smoothed = forward_backward(*inputs)
            outputs[0][0] = np.asarray(smoothed.gamma[0], dtype=float)
            outputs[1][0] = np.asarray(smoothed.xi_sum, dtype=float)
            outputs[2][0] = np.asarray(smoothed.gamma, dtype=float)

    class ForwardLogLik(Op):
        """log p(y) from ``log_initial`` (K,), ``log_transition`` (K, K), ``log_emission`` (T, K)."""

        __props__ = ()

        def make_node(self, log_initial, log_transition, log_emission):
            inputs = [pt.as_tensor_variable(v).astype("float64") for v in (log_initial, log_transition, log_emission)]
            return Apply(self, inputs, [pt.dscalar()])

        def perform(self, node, inputs, outputs):
            outputs[0][0] = np.asarray(forward_filter(*inputs)[0], dtype=float)

        def grad(self, inputs, output_grads):
            initial, transitions, states = ForwardGradient()(*inputs)
            g = output_grads[0]
            return [g * initial, g * transitions, g * states]

    @jax_funcify.register(ForwardLogLik)
    def _jax_forward(op, **kwargs):
        return forward_log_jax

    _FORWARD_OP = ForwardLogLik()
    return _FORWARD_OP


_FORWARD_OP = None


def log_emission_symbolic(model_def: HiddenMarkovModel, y, emission: Mapping):
    """log p(y_t | z_t = k) (T, K) as a pytensor expression of the emission parameters (each (K,)).

    ``y`` (T,) is a numpy array (its log-factorials computed once, here) or a pytensor variable (a study's
    data container, swapped per replicate: the log-factorials then belong to the graph)."""
    import pytensor.tensor as pt
    from pytensor.graph.basic import Variable

    symbolic = isinstance(y, Variable)
    y = y[:, None] if symbolic else np.asarray(y, dtype=float)[:, None]
    if model_def.emission == "poisson":
        rate = emission["rate"][None, :]
        from scipy.special import gammaln

        log_factorial = pt.gammaln(y + 1) if symbolic else gammaln(y + 1)
        return pt.switch(pt.eq(y, 0), 0.0, y * pt.log(rate)) - rate - log_factorial
    sigma = emission["sigma"][None, :]
    z = (y - emission["mu"][None, :]) / sigma
    return -0.5 * z * z - pt.log(sigma) - 0.5 * np.log(2 * np.pi)


def stationary_symbolic(transition, n_states: int):
    """The stationary distribution of a pytensor (K, K) transition matrix (``n_states`` = K), the same numbers
    as :func:`~emvsbayes.hmm.model.stationary_distribution` (to rounding) by the GTH algorithm (Grassmann,
    Taksar & Heyman 1985; Stewart 1994, 2.7): state K-1, then K-2, ... is censored out of the chain (its row
    sum off the diagonal divides its column, its paths are added to the rest), then the probabilities follow
    by back-substitution from state 0's.

    Why not ``solve((I - A + U)^T, 1)`` as in numpy: on the numpyro path a K x K solve is LAPACK calls, and
    with its gradient it took about as long as the forward recursion itself (the earthquakes, K = 3: the
    sampled model's log-density and gradient 74-79 us with the solve, about 50 us without, measured side by
    side); GTH is K small steps of sums, products and quotients that XLA fuses. It also subtracts nothing,
    so it is accurate to rounding for any irreducible chain (every entry of a Dirichlet draw is positive)."""
    import pytensor.tensor as pt

    current = transition
    censored_columns = {}
    for n in range(n_states - 1, 0, -1):
        leaving = pt.sum(current[n, :n])
        censored_columns[n] = current[:n, n] / leaving
        current = current[:n, :n] + censored_columns[n][:, None] * current[n, :n][None, :]
    unnormalised = [pt.ones(())]
    for j in range(1, n_states):
        unnormalised.append(pt.dot(pt.stack(unnormalised), censored_columns[j]))
    unnormalised = pt.stack(unnormalised)
    return unnormalised / pt.sum(unnormalised)


def build_model(model_def: HiddenMarkovModel, y, *, time_labels: Sequence | None = None,
                data_container: str | None = None, prefix_container: str | None = None):
    """A ``pymc.Model`` of the HMM for series ``y`` (T,), coordinates ``component``, ``component_to``, ``time``.

    ``data_container``: the name of a ``pm.Data`` container holding ``y`` (a study swaps each replicate's
    series into it, so one compiled model serves them all); None puts ``y`` in the graph as a constant. The
    priors must then not depend on ``y`` (a study's are fixed numbers): they are computed from the series
    given here only.

    ``prefix_container``: the name of a ``pm.Data`` container of T weights, 1 for each time point the
    likelihood counts and 0 after it (built with ones: the whole series). With the first n counted, the
    model is the posterior given y_0..y_{n-1}: a step without its emission only moves the forward
    probabilities by the transition matrix, whose rows sum to 1, so log p(y_0..y_{n-1}) is what the
    recursion ends with. Leave-future-out's refits set it per prefix, and one compiled program serves them all."""
    import pymc as pm
    import pytensor.tensor as pt

    y = np.asarray(y, dtype=float)
    k = model_def.n_components
    prior = prior_values(model_def, y)
    coords = {"component": np.arange(k), "component_to": np.arange(k),
              "time": list(time_labels) if time_labels is not None else np.arange(y.size)}
    transforms = pm.distributions.transforms
    with pm.Model(coords=coords) as model:
        transition = pm.Dirichlet("transition", a=prior["transition_concentration"], dims=("component", "component_to"))
        if model_def.stationary:
            initial = pm.Deterministic("initial", stationary_symbolic(transition, k), dims="component")
        else:
            initial = pm.Dirichlet("initial", a=prior["initial_concentration"], dims="component")
        ordered = model_def.ordered and k > 1
        if model_def.emission == "poisson":
            shape, rate_param = prior["rate_prior"]
            kwargs = {"transform": transforms.Chain([transforms.log, transforms.ordered]), "default_transform": None} if ordered else {}
            emission = {"rate": pm.Gamma("rate", alpha=shape, beta=rate_param, dims="component", **kwargs)}
        else:
            kwargs = {"transform": transforms.ordered} if ordered else {}
            emission = {"mu": pm.Normal("mu", mu=prior["mu_loc"], sigma=prior["mu_scale"], dims="component", **kwargs),
                        "sigma": pm.HalfNormal("sigma", sigma=prior["sigma_scale"], dims="component")}
        series = pm.Data(data_container, y) if data_container is not None else y
        log_emission = log_emission_symbolic(model_def, series, emission)
        if prefix_container is not None:
            counted = pm.Data(prefix_container, np.ones(y.size))
            # a switch, not a product: 0 * log p would be NaN where a far-off state gives log p = -inf
            log_emission = pt.switch(pt.gt(counted, 0)[:, None], log_emission, 0.0)
        pm.Potential("loglik", _forward_loglik_op()(pt.log(initial), pt.log(transition), log_emission))
    return model


def _strictly_increasing(values: np.ndarray) -> np.ndarray:
    """Nudge ties apart: the ordered transform needs strictly increasing values (a tie is log 0)."""
    out = np.array(values, dtype=float)
    for i in range(1, out.size):
        out[i] = max(out[i], out[i - 1] + 1e-6 * max(1.0, abs(out[i - 1])))
    return out


def initvals_from_params(model_def: HiddenMarkovModel, params_list: Sequence[HMMParams]) -> list[dict]:
    """Chain starts, one per EM answer, in the model's free variables (natural scale).

    The identified variant sorts the states by ``rate`` (``mu``); probabilities are pulled off 0 (the
    Dirichlet's open support: an EM transition entry of exactly 0 is common) and renormalised."""
    starts = []
    location = "rate" if model_def.emission == "poisson" else "mu"
    for params in params_list:
        order = np.argsort(getattr(params, location), kind="stable") if model_def.ordered else np.arange(params.n_components)
        params = params.permuted(order)
        transition = np.clip(params.transition, 1e-3, None)
        start: dict[str, np.ndarray] = {"transition": transition / transition.sum(axis=1, keepdims=True)}
        if not model_def.stationary:
            initial = np.clip(params.initial, 1e-3, None)
            start["initial"] = initial / initial.sum()
        if model_def.emission == "poisson":
            rate = np.maximum(params.rate, 1e-3)
            start["rate"] = _strictly_increasing(rate) if model_def.ordered else rate
        else:
            start["mu"] = _strictly_increasing(params.mu) if model_def.ordered else np.array(params.mu)
            start["sigma"] = np.array(params.sigma)
        starts.append(start)
    return starts


def log_prior(model_def: HiddenMarkovModel, y, params: HMMParams) -> float:
    """The log prior density of ``params`` on the natural scale (no Jacobian), written out with scipy."""
    from scipy import stats

    prior = prior_values(model_def, y)
    total = sum(stats.dirichlet.logpdf(params.transition[i], prior["transition_concentration"][i])
                for i in range(model_def.n_components))
    if not model_def.stationary:
        total += stats.dirichlet.logpdf(params.initial, prior["initial_concentration"])
    if model_def.emission == "poisson":
        shape, rate = prior["rate_prior"]
        total += stats.gamma.logpdf(params.rate, shape, scale=1.0 / rate).sum()
    else:
        total += stats.norm.logpdf(params.mu, prior["mu_loc"], prior["mu_scale"]).sum()
        total += stats.halfnorm.logpdf(params.sigma, scale=prior["sigma_scale"]).sum()
    return float(total)


def params_from_draws(model_def: HiddenMarkovModel, draws: Mapping[str, np.ndarray]) -> HMMParams:
    """A batched :class:`HMMParams` (leading axis S) from draws keyed by variable name."""
    emission = {name: np.asarray(draws[name], dtype=float) for name in emission_names(model_def.emission)}
    transition = np.asarray(draws["transition"], dtype=float)
    initial = (stationary_distribution(transition) if model_def.stationary or "initial" not in draws
               else np.asarray(draws["initial"], dtype=float))
    return HMMParams(initial, transition, **emission)


def _per_draw(model_def: HiddenMarkovModel, y, draws: Mapping[str, np.ndarray]):
    params = params_from_draws(model_def, draws)
    log_emission = model_def.log_emission(params, y)  # (S, T, K)
    with np.errstate(divide="ignore"):
        log_initial = np.log(np.clip(params.initial, 0.0, None))
        log_transition = np.log(params.transition)
    return log_initial, log_transition, log_emission


def state_probabilities(model_def: HiddenMarkovModel, y, draws: Mapping[str, np.ndarray]) -> np.ndarray:
    """P(z_t = k | y, draw) for every draw, shape (S, T, K): forward filtering and backward smoothing per draw."""
    log_initial, log_transition, log_emission = _per_draw(model_def, y, draws)
    return np.stack([forward_backward(log_initial[s], log_transition[s], log_emission[s]).gamma
                     for s in range(log_emission.shape[0])])


def one_step_predictive(model_def: HiddenMarkovModel, y, draws: Mapping[str, np.ndarray]) -> np.ndarray:
    """log p(y_t | y_0..y_{t-1}, draw) for every draw, (S, T): the one-step-ahead predictive log densities,
    whose sum per draw is the log-likelihood.

    These are the pieces of a criterion valid for dependent data (pointwise LOO is not: leaving out y_t still
    lets y_{t+1} inform z_t, so the left-out point is not predicted from the past). With draws from the
    posterior given the whole series they give an in-sample score; the leave-future-out score needs draws
    given y_0..y_{t-1} for each t, by refits or by importance weighting these draws (PSIS-LFO, Bürkner, Gabry
    & Vehtari 2020), which uses exactly these per-draw densities.
    """
    log_initial, log_transition, log_emission = _per_draw(model_def, y, draws)
    return np.stack([forward_filter(log_initial[s], log_transition[s], log_emission[s])[2]
                     for s in range(log_emission.shape[0])])
