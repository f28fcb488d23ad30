// scaling/isoflop_fit.h against a known law: IsoFLOP profiles sampled from L = E + A/N^alpha + B/D^beta (the
// small-scale law alpha 0.5, beta 0.4, noise-free) at four budgets, 7 N per budget spaced 0.25 decade around
// the analytic optimum (offset by a budget-dependent 0.05-0.15 decade so the samples are not centred on it).
// Tolerances: per-budget N_opt and D_opt within 10 % of the analytic ones (the loss is not a parabola in log
// N: the vertex of the fitted one sits off the true minimum by a factor set by alpha, beta and the sampling;
// measured 3-4 %), exponents a, b within 0.01 of beta/(alpha+beta) and alpha/(alpha+beta) (that factor
// cancels in the exponent).
#include "scaling/isoflop_fit.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "scaling/law_fit.h"

namespace nats::scaling {
namespace {

const ChinchillaLaw kLaw{2.1, 400.0, 1000.0, 0.5, 0.4};

Observation Row(double n, double flops, double loss, bool as_budget) {
  Observation o;
  o.params = n;
  o.tokens = flops / (6 * n);
  o.loss = loss;
  if (as_budget) {
    o.budget = flops;
  } else {
    o.flops = flops * 1.03;  // measured FLOPs differ from the plan; rounding to 0.1 decade regroups them
  }
  return o;
}

Observations Profiles(bool as_budget) {
  Observations obs;
  obs.has_budget = as_budget;
  obs.has_flops = !as_budget;
  int budget_index = 0;
  for (double flops : {1e16, 1e17, 1e18, 1e19}) {
    const double n_opt = ComputeOptimal(kLaw, flops).n_opt;
    const double offset = 0.05 * (1 + budget_index++ % 3);
    for (int k = -3; k <= 3; ++k) {
      const double n = n_opt * std::pow(10.0, offset + 0.25 * k);
      obs.rows.push_back(Row(n, flops, kLaw.Loss(n, flops / (6 * n)), as_budget));
    }
  }
  return obs;
}

void ExpectMatchesLaw(const IsoFlopFit& fit, int budgets_used) {
  int used = 0;
  for (const BudgetMinimum& b : fit.budgets) {
    if (!b.used) continue;
    ++used;
    const Allocation truth = ComputeOptimal(kLaw, b.flops);
    ASSERT_TRUE(b.n_opt && b.d_opt && b.loss_min);
    EXPECT_NEAR(*b.n_opt / truth.n_opt, 1.0, 0.10) << b.flops;
    EXPECT_NEAR(*b.d_opt / truth.d_opt, 1.0, 0.10) << b.flops;
    EXPECT_NEAR(*b.loss_min, truth.loss, 0.01 * truth.loss) << b.flops;
    EXPECT_EQ(b.note, "");
  }
  EXPECT_EQ(used, budgets_used);
  ASSERT_TRUE(fit.n_opt_law && fit.d_opt_law) << fit.law_note;
  const double sum = kLaw.alpha + kLaw.beta;
  EXPECT_NEAR(fit.n_opt_law->exponent, kLaw.beta / sum, 0.01);
  EXPECT_NEAR(fit.d_opt_law->exponent, kLaw.alpha / sum, 0.01);
  // N_opt = G (C/6)^a: the coefficient is G / 6^a, within the per-budget 10 %.
  EXPECT_NEAR(
      fit.n_opt_law->coefficient * std::pow(1e18, fit.n_opt_law->exponent) / ComputeOptimal(kLaw, 1e18).n_opt,
      1.0, 0.15);
}

TEST(PolynomialFit, ExactOnAPolynomial) {
  std::vector<double> x, y;
  for (double v : {7.0, 7.5, 8.0, 8.5, 9.0}) {
    x.push_back(v);
    y.push_back(3.0 - 0.5 * v + 0.25 * v * v);
  }
  const std::vector<double> c = PolynomialFit(x, y, 2);
  EXPECT_NEAR(c[0], 3.0, 1e-8);
  EXPECT_NEAR(c[1], -0.5, 1e-9);
  EXPECT_NEAR(c[2], 0.25, 1e-10);
}

TEST(FitIsoFlop, MinimaAndExponentsMatchTheLaw) {
  for (bool as_budget : {true, false}) {
    SCOPED_TRACE(as_budget ? "grouped by budget" : "grouped by rounded flops");
    auto fit = FitIsoFlop(Profiles(as_budget), "budget_flops", "flops");
    ASSERT_TRUE(fit.ok()) << fit.status();
    ASSERT_EQ(fit->budgets.size(), 4u);
    if (!as_budget) EXPECT_NEAR(fit->budgets[0].flops / 1e16, 1.0, 1e-9);  // 1.03e16 rounds to 10^16.0
    ExpectMatchesLaw(*fit, 4);
  }
}

TEST(FitIsoFlop, NonConvexAndEdgeMinimaAreReportedAndLeftOut) {
  Observations obs = Profiles(true);
  // Concave: loss peaks inside the range.
  for (double x : {7.0, 7.5, 8.0, 8.5})
    obs.rows.push_back(Row(std::pow(10.0, x), 3e17, 3.0 - 0.1 * (x - 7.7) * (x - 7.7), true));
  // Edge: every N far below the optimum of 1e20 FLOPs, so the loss falls monotonically and the vertex is past
  // the largest N.
  const double n_opt = ComputeOptimal(kLaw, 1e20).n_opt;
  for (int k = 0; k < 5; ++k) {
    const double n = n_opt * std::pow(10.0, -2.0 + 0.25 * k);
    obs.rows.push_back(Row(n, 1e20, kLaw.Loss(n, 1e20 / (6 * n)), true));
  }
  // Two distinct N only.
  obs.rows.push_back(Row(1e6, 5e18, 3.0, true));
  obs.rows.push_back(Row(2e6, 5e18, 2.9, true));
  auto fit = FitIsoFlop(obs, "budget_flops", "flops");
  ASSERT_TRUE(fit.ok()) << fit.status();
  ASSERT_EQ(fit->budgets.size(), 7u);
  for (const BudgetMinimum& b : fit->budgets) {
    if (b.flops == 3e17) {
      EXPECT_FALSE(b.used);
      EXPECT_NE(b.note.find("opens downwards"), std::string::npos) << b.note;
      EXPECT_FALSE(b.n_opt.has_value());
    } else if (b.flops == 1e20) {
      EXPECT_FALSE(b.used);
      EXPECT_NE(b.note.find("outside the sampled N"), std::string::npos) << b.note;
    } else if (b.flops == 5e18) {
      EXPECT_FALSE(b.used);
      EXPECT_FALSE(b.parabola.has_value());
      EXPECT_NE(b.note.find("2 distinct N"), std::string::npos) << b.note;
    }
  }
  ExpectMatchesLaw(*fit, 4);
}

TEST(FitIsoFlop, OneUsableBudgetGivesNoLaw) {
  Observations obs = Profiles(true);
  obs.rows.resize(7);
  auto fit = FitIsoFlop(obs, "budget_flops", "flops");
  ASSERT_TRUE(fit.ok()) << fit.status();
  EXPECT_FALSE(fit->n_opt_law.has_value());
  EXPECT_NE(fit->law_note.find("need 2"), std::string::npos) << fit->law_note;
}

TEST(FitIsoFlop, SkippedWithoutABudgetOrFlopsColumn) {
  Observations obs = Profiles(true);
  obs.has_budget = false;
  auto fit = FitIsoFlop(obs, "budget_flops", "flops");
  ASSERT_FALSE(fit.ok());
  EXPECT_NE(std::string(fit.status().message()).find("'budget_flops'"), std::string::npos) << fit.status();
}

}  // namespace
}  // namespace nats::scaling
