// `nats fit RESULTS.csv`: scaling laws from a table of (parameters, tokens, loss): Chinchilla's Approach 3
// (scaling/law_fit.h) with bootstrap intervals and the compute-optimal allocation, Approach 2 where the rows
// carry budgets (scaling/isoflop_fit.h) and the KV-fraction extension where they carry kv fractions. Prints
// the report and writes fit.json (scaling/fit_report.h). Exit 2: a usage error; 1: the data cannot be fitted.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"
#include "scaling/csv_table.h"
#include "scaling/fit_report.h"
#include "scaling/isoflop_fit.h"
#include "scaling/law_fit.h"

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats fit RESULTS.csv [--out FIT.json] [--bootstrap N] [--budgets C,...] [flags]\n"
    "  Scaling laws from any CSV with parameter, token and loss columns (our sweep's results.csv or "
    "published\n"
    "  results): Chinchilla's Approach 3 L = E + A/N^alpha + B/D^beta (Huber on log L, L-BFGS from the best\n"
    "  --lbfgs_starts of Chinchilla's 4500 grid points) with bootstrap 95% intervals, the compute-optimal\n"
    "  allocation under C = 6 N D next to Chinchilla's published fit, Approach 2 (IsoFLOP parabolas) when "
    "rows\n"
    "  carry a budget or flops, and + K (1 - kv)^gamma when they carry >= 2 distinct KV fractions below 1.\n"
    "  Rows whose `status` column is not `ok` are skipped. docs/scaling.md, \"Fitting\".\n"
    "  --out FIT.json      where to write the fits (default: fit.json next to RESULTS.csv)\n"
    "  --bootstrap N       bootstrap resamples for the intervals (default 100; 0: none)\n"
    "  --budgets C,...     FLOP budgets of the allocation tables (default: the budget column's values, else "
    "the\n"
    "                      decades the flops column spans; plus 1e21 and 5.76e23 (Chinchilla's))\n"
    "  --params COL        column of N, parameters (default params)\n"
    "  --tokens COL        column of D, training tokens (default tokens)\n"
    "  --loss COL          column of the loss in nats per token (default loss)\n"
    "  --kv COL            column of the KV-cache fraction in (0, 1] (default kv_fraction)\n"
    "  --budget COL        column of the planned FLOP budget, for Approach 2 (default budget_flops)\n"
    "  --flops COL         column of the run's FLOPs, Approach 2's fallback grouping (default flops)\n"
    "  --huber_delta X     Huber loss threshold on log L (default 0.001)\n"
    "  --lbfgs_starts K    L-BFGS runs from the K best grid points (default 32)\n"
    "  --seed S            bootstrap seed (default 0; a seed gives the same intervals every time)\n"
    "  --law_rows F        rows of Approaches 3 and 2: COL=VALUE or all (default: attention=DENSE when the\n"
    "                      table has an attention column with >= 5 such rows, so the law is the dense one "
    "and\n"
    "                      the KV fit, over every row, measures what sparsity changes; else all)\n";

absl::StatusOr<std::vector<double>> ParseBudgets(const std::string& text) {
  std::vector<double> out;
  for (absl::string_view word : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double v = 0;
    if (!absl::SimpleAtod(word, &v) || !std::isfinite(v) || v <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "fit: --budgets: '", word, "' is not a positive number of FLOPs (e.g. --budgets 1e18,1e21)"));
    }
    out.push_back(v);
  }
  if (out.empty()) return absl::InvalidArgumentError("fit: --budgets: no budgets (e.g. --budgets 1e18,1e21)");
  return out;
}

// The default budgets: the distinct planned budgets, else the decades the measured FLOPs span; then
// 1e21 and 5.76e23 (the budget of Gopher and Chinchilla) to compare with.
std::vector<double> DefaultBudgets(const scaling::Observations& obs) {
  std::set<double> budgets;
  double lo = INFINITY, hi = 0;
  for (const scaling::Observation& o : obs.rows) {
    if (o.budget) budgets.insert(*o.budget);
    if (o.flops) {
      lo = std::min(lo, *o.flops);
      hi = std::max(hi, *o.flops);
    }
  }
  if (budgets.empty() && hi > 0) {
    for (int k = static_cast<int>(std::floor(std::log10(lo)));
         k <= static_cast<int>(std::ceil(std::log10(hi))); ++k)
      budgets.insert(std::pow(10.0, k));
  }
  budgets.insert(1e21);
  budgets.insert(5.76e23);
  return {budgets.begin(), budgets.end()};
}

int DataError(const absl::Status& status) {
  std::fprintf(stderr, "fit: %s\n", std::string(status.message()).c_str());
  return 1;
}

}  // namespace

int RunFit(int argc, char** argv) {
  ParsedFlags flags;
  if (auto exit_code =
          ParseCommandFlags(argc, argv,
                            {"out", "bootstrap", "budgets", "params", "tokens", "loss", "kv", "budget",
                             "flops", "huber_delta", "lbfgs_starts", "seed", "law_rows"},
                            {}, kHelp, &flags, /*allow_positional=*/true))
    return *exit_code;
  if (flags.positional.size() != 1) {
    std::fprintf(stderr, "fit: give one RESULTS.csv (e.g. runs/sweep/results.csv), got %zu\n%s",
                 flags.positional.size(), kHelp);
    return 2;
  }
  const std::string csv = flags.positional[0];
  auto usage = [&](const std::string& message) {
    std::fprintf(stderr, "fit: %s\n", message.c_str());
    return 2;
  };
  scaling::FitResults results;
  scaling::ObservationColumns& columns = results.columns;
  columns.params = flags.Get("params", columns.params);
  columns.tokens = flags.Get("tokens", columns.tokens);
  columns.loss = flags.Get("loss", columns.loss);
  columns.kv = flags.Get("kv", columns.kv);
  columns.budget = flags.Get("budget", columns.budget);
  columns.flops = flags.Get("flops", columns.flops);
  scaling::LawFitOptions& options = results.options;
  int64_t integer = 0;
  if (flags.Has("bootstrap")) {
    if (!absl::SimpleAtoi(flags.Get("bootstrap"), &integer) || integer < 0 || integer > 100000)
      return usage("--bootstrap: want a number of resamples 0..100000, got '" + flags.Get("bootstrap") + "'");
    options.bootstrap = static_cast<int>(integer);
  }
  if (flags.Has("lbfgs_starts")) {
    if (!absl::SimpleAtoi(flags.Get("lbfgs_starts"), &integer) || integer < 1 || integer > 4500)
      return usage("--lbfgs_starts: want 1..4500, got '" + flags.Get("lbfgs_starts") + "'");
    options.lbfgs_starts = static_cast<int>(integer);
  }
  if (flags.Has("seed")) {
    uint64_t seed = 0;
    if (!absl::SimpleAtoi(flags.Get("seed"), &seed))
      return usage("--seed: want an integer >= 0, got '" + flags.Get("seed") + "'");
    options.seed = seed;
  }
  if (flags.Has("huber_delta")) {
    double delta = 0;
    if (!absl::SimpleAtod(flags.Get("huber_delta"), &delta) || !std::isfinite(delta) || delta <= 0)
      return usage("--huber_delta: want a positive number, got '" + flags.Get("huber_delta") + "'");
    options.huber_delta = delta;
  }
  std::vector<double> budgets;
  if (flags.Has("budgets")) {
    auto parsed = ParseBudgets(flags.Get("budgets"));
    if (!parsed.ok()) {
      std::fprintf(stderr, "%s\n", std::string(parsed.status().message()).c_str());
      return 2;
    }
    budgets = *parsed;
  }
  std::string out = flags.Get("out");
  if (out.empty()) {
    const size_t slash = csv.rfind('/');
    out = slash == std::string::npos ? "fit.json" : csv.substr(0, slash + 1) + "fit.json";
  }

  const auto start = std::chrono::steady_clock::now();
  auto table = scaling::CsvTable::Read(csv);
  if (!table.ok()) return DataError(table.status());
  const std::string law_rows = flags.Get("law_rows", "");
  if (!law_rows.empty() && law_rows != "all") {
    const size_t eq = law_rows.find('=');
    if (eq == std::string::npos || eq == 0)
      return usage("--law_rows " + law_rows + ": give COL=VALUE or all");
    columns.law_column = law_rows.substr(0, eq);
    columns.law_value = law_rows.substr(eq + 1);
  } else if (law_rows.empty() && table->ColumnIndex(columns.attention) >= 0) {
    columns.law_column = columns.attention;
    columns.law_value = "DENSE";
  }
  auto observations = scaling::ReadObservations(*table, columns);
  if (!observations.ok()) return DataError(observations.status());
  results.observations = std::move(*observations);
  const scaling::Observations& obs = results.observations;
  scaling::Observations law_obs = obs;  // the rows of Approaches 3 and 2
  law_obs.rows.clear();
  for (const scaling::Observation& o : obs.rows) {
    if (o.law_row) law_obs.rows.push_back(o);
  }
  if (law_rows.empty() && !columns.law_column.empty() && law_obs.rows.size() < 5) {
    law_obs.rows = obs.rows;  // the default filter leaves too few: fit every row
    columns.law_column.clear();
  }
  results.law_rows = columns.law_column.empty() ? "all" : columns.law_column + "=" + columns.law_value;
  results.law_row_count = static_cast<int>(law_obs.rows.size());
  if (law_obs.rows.size() < 5 && law_obs.rows.size() < obs.rows.size()) {
    return DataError(absl::InvalidArgumentError(
        absl::StrCat(csv, ": ", law_obs.rows.size(), " rows where ", results.law_rows,
                     "; a fit of E, A, B, alpha, beta needs at least 5 (--law_rows all fits every row)")));
  }
  if (obs.rows.size() < 5) {
    return DataError(absl::InvalidArgumentError(absl::StrCat(
        csv, ": ", obs.rows.size(), " usable rows (", obs.rows_read, " read, ", obs.skipped.size(),
        " skipped by status); a fit of E, A, B, alpha, beta needs at least 5")));
  }
  if (budgets.empty()) budgets = DefaultBudgets(obs);
  std::sort(budgets.begin(), budgets.end());
  results.budgets = budgets;

  std::vector<double> n, d, loss;
  for (const scaling::Observation& o : law_obs.rows) {
    n.push_back(o.params);
    d.push_back(o.tokens);
    loss.push_back(o.loss);
  }
  auto approach3 = scaling::FitChinchillaLaw(n, d, loss, options);
  if (!approach3.ok())
    return DataError(absl::InvalidArgumentError(absl::StrCat(csv, ": ", approach3.status().message())));
  results.approach3 = std::move(*approach3);

  auto approach2 = scaling::FitIsoFlop(law_obs, columns.budget, columns.flops);
  if (approach2.ok()) {
    results.approach2 = std::move(*approach2);
  } else {
    results.approach2_skipped = std::string(approach2.status().message());
  }

  if (!obs.has_kv) {
    results.kv_skipped = absl::StrCat("no '", columns.kv, "' column (name it with --kv COL)");
  } else {
    std::vector<double> kn, kd, kk, kl;
    for (const scaling::Observation& o : obs.rows) {
      if (!o.kv) continue;
      kn.push_back(o.params);
      kd.push_back(o.tokens);
      kk.push_back(*o.kv);
      kl.push_back(o.loss);
    }
    results.kv_rows = static_cast<int>(kn.size());
    auto kv = scaling::FitKvLaw(kn, kd, kk, kl, results.approach3.law, options);
    if (kv.ok()) {
      results.kv = std::move(*kv);
    } else {
      results.kv_skipped = std::string(kv.status().message());
    }
  }
  results.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  if (absl::Status s = scaling::WriteFitJson(out, scaling::FitJson(results)); !s.ok()) return DataError(s);
  std::fputs(scaling::FitReportText(results).c_str(), stdout);
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

}  // namespace nats::launch
