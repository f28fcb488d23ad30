// scaling/law_fit.h
//
// Chinchilla's Approach 3 (Hoffmann et al. 2022, section 3.3; as replicated by Besiroglu et al. 2024): fit
//   L(N, D) = E + A / N^alpha + B / D^beta
// to observed (parameters N, tokens D, loss L) by minimising sum_i Huber_delta(log L_hat_i - log L_i), with
//   log L_hat = LSE(a - alpha log N, b - beta log D, e),   E = exp(e), A = exp(a), B = exp(b)
// using torch::optim::LBFGS (strong Wolfe line search, float64). Starts: Chinchilla's grid (alpha, beta in
// {0, .5, 1, 1.5, 2}, e in {-1, -.5, 0, .5, 1}, a, b in {0, 5, ..., 25}: 4500 points), all evaluated in one
// vectorised pass; L-BFGS runs from the best `lbfgs_starts` of them and the lowest objective wins.
//
// Bootstrap: `bootstrap` resamples of the rows with replacement (as multiplicity weights, which is the same
// objective), each refitted from the full-data optimum plus the `bootstrap_starts` best grid points of that
// resample. Resample draws come from std::mt19937_64(seed) so a seed gives the same intervals everywhere.
//
// The KV extension (ours; NATS_SPEC KV-cache fraction kappa in (0, 1], dense = 1) adds K (1 - kappa)^gamma, K
// signed (sparsity may cost or save loss), gamma = exp(g) > 0, fitted the same way from the Approach 3
// optimum and a small grid over K and gamma.
//
// Compute-optimal allocation uses C = 6 N D (Kaplan et al. 2020; Hoffmann et al. 2022, eq. 4):
//   N_opt = G (C/6)^(beta/(alpha+beta)),  D_opt = (1/G) (C/6)^(alpha/(alpha+beta)),
//   G = (alpha A / (beta B))^(1/(alpha+beta)).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace nats::scaling {

struct ChinchillaLaw {
  double E = 0, A = 0, B = 0, alpha = 0, beta = 0;
  double Loss(double params, double tokens) const;
};

// Hoffmann et al. (2022), eq. 10: the published Approach 3 fit.
ChinchillaLaw PublishedChinchillaLaw();

struct Allocation {
  double flops = 0, n_opt = 0, d_opt = 0, tokens_per_param = 0, loss = 0;
};

// The minimum of law.Loss on the curve 6 N D = flops.
Allocation ComputeOptimal(const ChinchillaLaw& law, double flops);

struct KvLaw {
  ChinchillaLaw base;
  double K = 0, gamma = 1;
  double Loss(double params, double tokens, double kv) const;
};

struct LawFitOptions {
  double huber_delta = 1e-3;
  int lbfgs_starts = 32;     // L-BFGS runs from this many of the best grid points
  int bootstrap = 100;       // resamples; 0: no intervals
  int bootstrap_starts = 3;  // grid points per resample, besides the full-data optimum
  uint64_t seed = 0;
};

struct LawFit {
  ChinchillaLaw law;
  double objective = 0;  // sum_i Huber_delta(residual_i) at the optimum
  int grid_starts = 0;   // 4500
  int lbfgs_starts = 0;
  std::vector<ChinchillaLaw> bootstrap;  // one per resample whose refit ended finite
  int bootstrap_failed = 0;
  double fit_seconds = 0, bootstrap_seconds = 0;
};

// Needs >= 5 rows (5 parameters); the vectors have equal sizes and positive entries.
absl::StatusOr<LawFit> FitChinchillaLaw(const std::vector<double>& params, const std::vector<double>& tokens,
                                        const std::vector<double>& loss, const LawFitOptions& options);

struct KvFit {
  KvLaw law;
  double objective = 0;
  std::vector<KvLaw> bootstrap;
  int bootstrap_failed = 0;
  double fit_seconds = 0, bootstrap_seconds = 0;
};

// `start`: the Approach 3 optimum. Needs >= 7 rows and >= 2 distinct kv values below 1.
absl::StatusOr<KvFit> FitKvLaw(const std::vector<double>& params, const std::vector<double>& tokens,
                               const std::vector<double>& kv, const std::vector<double>& loss,
                               const ChinchillaLaw& start, const LawFitOptions& options);

struct Interval {
  double lo = 0, hi = 0;
};

// The 2.5th and 97.5th percentiles, linearly interpolated between order statistics (numpy's default); NaN
// when `values` is empty.
Interval Percentile95(std::vector<double> values);

namespace internal {

// The fit's objective sum_i Huber_delta(log L_hat_i - log L_i) at one parameter vector theta (a, b, e, alpha,
// beta, then K, g when `kv` is non-empty) and its gradient: hand-derived (the fast path L-BFGS uses) or by
// autograd (its slow twin; tests/scaling/law_fit_test.cpp holds the two together).
struct ObjectiveValue {
  double value = 0;
  std::vector<double> gradient;
};
ObjectiveValue LawObjective(const std::vector<double>& theta, const std::vector<double>& params,
                            const std::vector<double>& tokens, const std::vector<double>& kv,
                            const std::vector<double>& loss, double delta, bool autograd);

}  // namespace internal
}  // namespace nats::scaling
