#include "runtime/step_guard.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace nats {
namespace {

// z-score of x against the window; 0 while the window is shorter than min_history or has no spread.
// Also returns the mean and standard deviation for the message.
double ZScore(const std::deque<double>& window, double x, int min_history, double* mean, double* std_dev) {
  *mean = 0;
  *std_dev = 0;
  if (static_cast<int>(window.size()) < std::max(2, min_history)) return 0;
  for (double v : window) *mean += v;
  *mean /= window.size();
  double var = 0;
  for (double v : window) var += (v - *mean) * (v - *mean);
  *std_dev = std::sqrt(var / (window.size() - 1));
  // A perfectly flat history (a constant loss) makes every change infinitely surprising; treat it as no
  // signal.
  if (*std_dev <= 1e-12 * std::max(1.0, std::abs(*mean))) return 0;
  return (x - *mean) / *std_dev;
}

}  // namespace

StepGuard::StepGuard(const config::GuardConfig& config) : config_(config) {}

StepVerdict StepGuard::Check(double loss, double grad_norm) const {
  StepVerdict v;
  if (config_.skip_nonfinite()) {
    if (!std::isfinite(loss)) {
      v.bad = true;
      v.reason = absl::StrFormat("loss is %f", loss);
      return v;
    }
    if (!std::isfinite(grad_norm)) {
      v.bad = true;
      v.reason = absl::StrFormat("gradient norm is %f", grad_norm);
      return v;
    }
  }
  struct Test {
    const char* what;
    const std::deque<double>& window;
    double value;
    double limit;
  };
  for (const Test& t : {Test{"loss", losses_, loss, config_.loss_zscore()},
                        Test{"gradient norm", grad_norms_, grad_norm, config_.grad_norm_zscore()}}) {
    if (t.limit <= 0) continue;
    double mean = 0, std_dev = 0;
    const double z = ZScore(t.window, t.value, config_.min_history(), &mean, &std_dev);
    if (z > t.limit) {
      v.bad = true;
      v.reason = absl::StrFormat("%s %.4g has z-score %.1f > %g (mean %.4g, std %.3g over the last %d steps)",
                                 t.what, t.value, z, t.limit, mean, std_dev, t.window.size());
      return v;
    }
  }
  return v;
}

void StepGuard::Accept(double loss, double grad_norm) {
  bad_in_a_row_ = 0;
  const size_t window = static_cast<size_t>(std::max(1, config_.window()));
  losses_.push_back(loss);
  grad_norms_.push_back(grad_norm);
  while (losses_.size() > window) losses_.pop_front();
  while (grad_norms_.size() > window) grad_norms_.pop_front();
}

void StepGuard::Restore(const std::vector<double>& losses, const std::vector<double>& grad_norms) {
  losses_.assign(losses.begin(), losses.end());
  grad_norms_.assign(grad_norms.begin(), grad_norms.end());
  bad_in_a_row_ = 0;
}

absl::StatusOr<std::map<int64_t, double>> ParseFaultLossScale(absl::string_view spec) {
  std::map<int64_t, double> out;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits(':', 1));
    int64_t batch = 0;
    double factor = 0;
    const bool ok_batch = absl::SimpleAtoi(kv.first, &batch) && batch >= 0;
    bool ok_factor = absl::SimpleAtod(kv.second, &factor);
    if (kv.second == "nan") factor = std::nan(""), ok_factor = true;
    if (!ok_batch || !ok_factor) {
      return absl::InvalidArgumentError(
          absl::StrCat("NATS_FAULT_LOSS_SCALE: '", item, "' is not BATCH:FACTOR (e.g. 5:nan,9:1e4)"));
    }
    out[batch] = factor;
  }
  return out;
}

}  // namespace nats
