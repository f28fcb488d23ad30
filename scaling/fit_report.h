// scaling/fit_report.h
//
// What `nats fit` produces from its fits: fit.json (the schema of docs/scaling.md, "Fitting"; read by the
// plotting scripts, so its keys change only together with them) and the printed report (aligned tables of the
// fitted values with their 95 % bootstrap intervals, the compute-optimal allocation next to Chinchilla's
// published fit, Approach 2's per-budget minima, the KV fit, timings). Both are pure functions of FitResults.
// Values that are not finite (an interval without resamples) are written as JSON null and printed as "-".
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "scaling/csv_table.h"
#include "scaling/isoflop_fit.h"
#include "scaling/law_fit.h"

namespace nats::scaling {

// The KV-fraction grid of the frontier: 0.05, 0.10, ..., 1.00.
std::vector<double> FrontierKvGrid();

struct FitResults {
  ObservationColumns columns;
  Observations observations;
  LawFitOptions options;
  std::vector<double> budgets;  // FLOPs of the allocation tables, ascending
  LawFit approach3;
  std::optional<IsoFlopFit> approach2;
  std::string approach2_skipped;  // why approach2 is absent
  std::optional<KvFit> kv;
  std::string kv_skipped;  // why kv is absent
  int kv_rows = 0;         // rows of the KV fit
  std::string law_rows;    // "attention=DENSE" or "all": the rows of Approaches 3 and 2
  int law_row_count = 0;
  double total_seconds = 0;
};

nlohmann::json FitJson(const FitResults& results);
std::string FitReportText(const FitResults& results);
absl::Status WriteFitJson(const std::string& path, const nlohmann::json& json);

}  // namespace nats::scaling
