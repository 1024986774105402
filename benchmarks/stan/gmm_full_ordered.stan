// D-dimensional Gaussian mixture with full covariances, the identified variant of
// emvsbayes.gaussian.bayes.build_model: w ~ Dirichlet(w_concentration); mu_kd ~ Normal(mu_loc_d,
// mu_scale_d), the first coordinates ordered (mu_first) and the rest free (mu_rest), as PyMC's
// mu_first / mu_rest; per component a covariance L_k L_k^T with L_k = diag(tau_k) L_corr_k, tau_kd ~
// HalfNormal(sigma_scale_d), L_corr_k ~ LKJCholesky(lkj_eta) (the distribution of PyMC's
// LKJCholeskyCov(eta, sd_dist=HalfNormal(sigma_scale)); its unconstrained coordinates differ);
// x_i ~ sum_k w_k MvNormal(mu_k, L_k L_k^T), the labels summed out by log_sum_exp.
data {
  int<lower=1> N;
  int<lower=2> D;
  int<lower=1> K;
  matrix[D, N] x_t;                // the data, feature-major
  real<lower=0> w_concentration;
  vector[D] mu_loc;
  vector<lower=0>[D] mu_scale;
  vector<lower=0>[D] sigma_scale;
  real<lower=0> lkj_eta;
}
parameters {
  simplex[K] w;
  ordered[K] mu_first;
  array[K] vector[D - 1] mu_rest;
  array[K] cholesky_factor_corr[D] L_corr;
  array[K] vector<lower=0>[D] tau;
}
model {
  w ~ dirichlet(rep_vector(w_concentration, K));
  mu_first ~ normal(mu_loc[1], mu_scale[1]);
  for (k in 1:K) {
    mu_rest[k] ~ normal(mu_loc[2:D], mu_scale[2:D]);
    tau[k] ~ normal(0, sigma_scale);
    L_corr[k] ~ lkj_corr_cholesky(lkj_eta);
  }
  {
    matrix[K, N] lp;
    vector[K] log_w = log(w);
    for (k in 1:K) {
      matrix[D, D] L = diag_pre_multiply(tau[k], L_corr[k]);
      matrix[D, N] z = mdivide_left_tri_low(L, x_t - rep_matrix(append_row(mu_first[k], mu_rest[k]), N));
      lp[k] = log_w[k] - 0.5 * columns_dot_self(z) - sum(log(diagonal(L)));
    }
    for (n in 1:N)
      target += log_sum_exp(lp[:, n]);
    target += -0.5 * N * D * log(2 * pi());
  }
}
generated quantities {
  array[K] vector[D] mu;
  for (k in 1:K)
    mu[k] = append_row(mu_first[k], mu_rest[k]);
  array[K] matrix[D, D] cov;
  for (k in 1:K)
    cov[k] = multiply_lower_tri_self_transpose(diag_pre_multiply(tau[k], L_corr[k]));
}
