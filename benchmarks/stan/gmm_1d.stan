// 1-D Gaussian mixture, the symmetric (exchangeable) variant of emvsbayes.gaussian.bayes.build_model:
// w ~ Dirichlet(w_concentration), mu_k ~ Normal(mu_loc, mu_scale), sigma_k ~ HalfNormal(sigma_scale),
// x_i ~ sum_k w_k Normal(mu_k, sigma_k), the labels summed out by log_sum_exp.
// The prior numbers are passed as data (prior_values(): data mean, 2 x data sd, data sd by default).
data {
  int<lower=1> N;
  int<lower=1> K;
  vector[N] x;
  real<lower=0> w_concentration;
  real mu_loc;
  real<lower=0> mu_scale;
  real<lower=0> sigma_scale;
}
parameters {
  simplex[K] w;
  vector[K] mu;
  vector<lower=0>[K] sigma;
}
model {
  w ~ dirichlet(rep_vector(w_concentration, K));
  mu ~ normal(mu_loc, mu_scale);
  sigma ~ normal(0, sigma_scale);  // half-normal through the lower bound
  {
    matrix[N, K] lp;
    vector[K] log_w = log(w);
    for (k in 1:K)
      lp[:, k] = log_w[k] - 0.5 * square((x - mu[k]) / sigma[k]) - log(sigma[k]);
    for (n in 1:N)
      target += log_sum_exp(lp[n]');
    target += -0.5 * N * log(2 * pi());
  }
}
