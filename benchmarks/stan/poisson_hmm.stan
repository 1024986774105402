// Poisson hidden Markov model with a stationary initial distribution, the symmetric (exchangeable) variant of
// emvsbayes.hmm.bayes.build_model: transition[i] ~ Dirichlet(transition_concentration[i]) (row i: the
// transitions out of state i), rate[k] ~ Gamma(rate_shape, rate_rate), the first state drawn from the stationary
// distribution of the transition matrix, y_t | z_t = k ~ Poisson(rate[k]); the states summed out by Stan's
// hmm_marginal (the forward algorithm).
// The stationary distribution is computed as emvsbayes does (stationary_symbolic): the solution of
// (I - Gamma' + 1 1') initial = 1, which is pi' Gamma = pi with sum(pi) = 1 in one nonsingular system.
// The prior numbers are passed as data (emvsbayes.hmm.bayes.prior_values()).
data {
  int<lower=1> T;
  int<lower=1> K;
  array[T] int<lower=0> y;
  matrix<lower=0>[K, K] transition_concentration;
  real<lower=0> rate_shape;
  real<lower=0> rate_rate;
}
parameters {
  array[K] simplex[K] transition;
  vector<lower=0>[K] rate;
}
transformed parameters {
  matrix[K, K] Gamma;
  for (i in 1:K)
    Gamma[i] = transition[i]';
  vector[K] initial = (diag_matrix(rep_vector(1, K)) - Gamma' + rep_matrix(1, K, K)) \ rep_vector(1, K);
}
model {
  for (i in 1:K)
    transition[i] ~ dirichlet(transition_concentration[i]');
  rate ~ gamma(rate_shape, rate_rate);
  {
    matrix[K, T] log_omega;
    for (t in 1:T)
      for (k in 1:K)
        log_omega[k, t] = poisson_lpmf(y[t] | rate[k]);
    target += hmm_marginal(log_omega, Gamma, initial);
  }
}
