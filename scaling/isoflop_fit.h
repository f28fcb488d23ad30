// scaling/isoflop_fit.h
//
// Chinchilla's Approach 2 (Hoffmann et al. 2022, section 3.2): IsoFLOP profiles. The rows are grouped by
// compute budget C: the `budget` value of a row when it has one (the budget its run was planned for), else
// its `flops` rounded in log10 to 0.1 (C = 10^(k/10)); rows with neither are left out. For each budget with
// >= 3 distinct N, a least-squares parabola loss = c0 + c1 x + c2 x^2 in x = log10 N (the normal equations,
// solved with torch::linalg_solve); its vertex gives N_opt = 10^(-c1 / (2 c2)), D_opt = C / (6 N_opt)
// (C = 6 N D) and loss_min. A budget whose parabola opens downwards (c2 <= 0) or whose vertex lies outside
// the sampled N range (an extrapolated minimum) is reported with a note and left out of the power laws
//   N_opt = k_N C^a,  D_opt = k_D C^b
// fitted by least squares in log10-log10 over the budgets kept (needs >= 2).
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scaling/csv_table.h"

namespace nats::scaling {

struct BudgetMinimum {
  double flops = 0;
  int points = 0;                                 // rows in the budget
  std::optional<std::array<double, 3>> parabola;  // c0, c1, c2; absent with < 3 distinct N
  std::optional<double> n_opt, d_opt, loss_min;   // absent without a parabola or when c2 <= 0
  bool used = false;                              // in the power laws
  std::string note;                               // why not used; empty when used
};

struct PowerLaw {
  double coefficient = 0, exponent = 0;
};

struct IsoFlopFit {
  std::string grouping;                // how the rows were grouped, for the report
  std::vector<BudgetMinimum> budgets;  // ascending flops
  std::optional<PowerLaw> n_opt_law, d_opt_law;
  std::string law_note;  // why the laws are absent
  int rows_without_budget = 0;
};

// FailedPrecondition (the reason, for the report) when the table has neither a budget nor a flops column or
// no row has a value in either.
absl::StatusOr<IsoFlopFit> FitIsoFlop(const Observations& observations, const std::string& budget_column,
                                      const std::string& flops_column);

// Least-squares polynomial coefficients c0..c_degree of y over x (normal equations; x is centred first to
// keep them well conditioned, and the coefficients are mapped back).
std::vector<double> PolynomialFit(const std::vector<double>& x, const std::vector<double>& y, int degree);

}  // namespace nats::scaling
