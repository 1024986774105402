// The coin mixture of emvsbayes.coins.bayes.build_model with fixed weights (Do & Batzoglou 2008):
// theta_k ~ Beta(a, b); heads_i ~ sum_k w_k Binomial(tosses_i, theta_k), w given as data (1/K each),
// the coin labels summed out by log_sum_exp. Symmetric: no order on theta.
data {
  int<lower=1> N;
  int<lower=1> K;
  array[N] int<lower=0> heads;
  array[N] int<lower=0> tosses;
  real<lower=0> a;
  real<lower=0> b;
  simplex[K] w;
}
parameters {
  vector<lower=0, upper=1>[K] theta;
}
model {
  vector[K] log_w = log(w);
  theta ~ beta(a, b);
  for (n in 1:N) {
    vector[K] lp = log_w;
    for (k in 1:K)
      lp[k] += binomial_lpmf(heads[n] | tosses[n], theta[k]);
    target += log_sum_exp(lp);
  }
}
