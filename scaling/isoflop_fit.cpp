#include "scaling/isoflop_fit.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace nats::scaling {

std::vector<double> PolynomialFit(const std::vector<double>& x, const std::vector<double>& y, int degree) {
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  double mean = 0;
  for (double v : x) mean += v / x.size();
  const torch::Tensor xs = torch::tensor(at::ArrayRef<double>(x), f64) - mean;
  const torch::Tensor ys = torch::tensor(at::ArrayRef<double>(y), f64);
  std::vector<torch::Tensor> powers;
  for (int k = 0; k <= degree; ++k) powers.push_back(xs.pow(k));
  const torch::Tensor design = torch::stack(powers, 1);  // [n, degree + 1]
  const torch::Tensor centred =
      torch::linalg_solve(design.t().matmul(design), design.t().matmul(ys).unsqueeze(1)).reshape({-1});
  // p(x) = sum_k c'_k (x - mean)^k = sum_j x^j sum_{k >= j} c'_k binom(k, j) (-mean)^(k - j).
  std::vector<double> out(degree + 1, 0.0);
  for (int k = 0; k <= degree; ++k) {
    const double ck = centred[k].item<double>();
    double binomial = 1;
    for (int j = 0; j <= k; ++j) {
      if (j > 0) binomial = binomial * (k - j + 1) / j;
      out[j] += ck * binomial * std::pow(-mean, k - j);
    }
  }
  return out;
}

absl::StatusOr<IsoFlopFit> FitIsoFlop(const Observations& observations, const std::string& budget_column,
                                      const std::string& flops_column) {
  if (!observations.has_budget && !observations.has_flops) {
    return absl::FailedPreconditionError(absl::StrCat("no '", budget_column, "' or '", flops_column,
                                                      "' column to group the rows into IsoFLOP budgets"));
  }
  IsoFlopFit fit;
  std::map<double, std::vector<const Observation*>> groups;
  bool by_budget = false, by_flops = false;
  for (const Observation& o : observations.rows) {
    if (o.budget) {
      groups[*o.budget].push_back(&o);
      by_budget = true;
    } else if (o.flops) {
      // Runs planned for one budget differ in their measured FLOPs by rounding of N and D; 0.1 decade (26 %)
      // gathers them without merging budgets a sweep spaces by 1/2 decade or more.
      groups[std::pow(10.0, std::round(10.0 * std::log10(*o.flops)) / 10.0)].push_back(&o);
      by_flops = true;
    } else {
      ++fit.rows_without_budget;
    }
  }
  if (groups.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no row has a '", budget_column, "' or '", flops_column, "' value"));
  }
  fit.grouping = by_budget && by_flops ? absl::StrCat("by '", budget_column, "', else '", flops_column,
                                                      "' rounded to 0.1 decade")
                 : by_budget           ? absl::StrCat("by '", budget_column, "'")
                             : absl::StrCat("by '", flops_column, "' rounded to 0.1 decade in log10");
  std::vector<double> log_c, log_n, log_d;
  for (const auto& [flops, rows] : groups) {
    BudgetMinimum b;
    b.flops = flops;
    b.points = static_cast<int>(rows.size());
    std::vector<double> x, y;
    std::set<double> distinct;
    for (const Observation* o : rows) {
      x.push_back(std::log10(o->params));
      y.push_back(o->loss);
      distinct.insert(o->params);
    }
    if (distinct.size() < 3) {
      b.note = absl::StrCat(distinct.size(), " distinct N (a parabola needs 3)");
      fit.budgets.push_back(b);
      continue;
    }
    const std::vector<double> c = PolynomialFit(x, y, 2);
    b.parabola = std::array<double, 3>{c[0], c[1], c[2]};
    if (!(c[2] > 0)) {
      b.note = absl::StrFormat("parabola opens downwards (c2 = %.3g): no minimum", c[2]);
      fit.budgets.push_back(b);
      continue;
    }
    const double x_opt = -c[1] / (2 * c[2]);
    b.n_opt = std::pow(10.0, x_opt);
    b.d_opt = flops / (6.0 * *b.n_opt);
    b.loss_min = c[0] + c[1] * x_opt + c[2] * x_opt * x_opt;
    const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
    if (x_opt < *lo || x_opt > *hi) {
      b.note = absl::StrFormat("minimum at N = %.3g outside the sampled N %.3g..%.3g (extrapolated)",
                               *b.n_opt, std::pow(10.0, *lo), std::pow(10.0, *hi));
      fit.budgets.push_back(b);
      continue;
    }
    b.used = true;
    log_c.push_back(std::log10(flops));
    log_n.push_back(x_opt);
    log_d.push_back(std::log10(*b.d_opt));
    fit.budgets.push_back(b);
  }
  if (log_c.size() < 2) {
    fit.law_note = absl::StrCat(log_c.size(), " budget(s) with an interior minimum; the power laws need 2");
    return fit;
  }
  const std::vector<double> n_law = PolynomialFit(log_c, log_n, 1), d_law = PolynomialFit(log_c, log_d, 1);
  fit.n_opt_law = PowerLaw{std::pow(10.0, n_law[0]), n_law[1]};
  fit.d_opt_law = PowerLaw{std::pow(10.0, d_law[0]), d_law[1]};
  return fit;
}

}  // namespace nats::scaling
