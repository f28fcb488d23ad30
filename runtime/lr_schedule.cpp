#include "runtime/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace nats {

double LearningRateAt(const config::OptimConfig& o, int64_t step, int64_t total_steps) {
  const double peak = o.lr();
  const double floor = peak * o.min_lr_ratio();
  const int64_t warmup = o.warmup_steps();
  if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  switch (o.schedule()) {
    case config::OptimConfig::CONSTANT:
      return peak;
    case config::OptimConfig::WSD: {
      const int64_t decay_steps = static_cast<int64_t>(std::ceil(o.decay_fraction() * total_steps));
      const int64_t decay_start = std::max(warmup, total_steps - decay_steps);
      if (step < decay_start) return peak;
      const double progress = std::min(
          1.0, static_cast<double>(step - decay_start + 1) / std::max<int64_t>(1, total_steps - decay_start));
      return peak + (floor - peak) * progress;
    }
    case config::OptimConfig::COSINE:
    default: {
      const double progress =
          std::min(1.0, static_cast<double>(step - warmup) /
                            static_cast<double>(std::max<int64_t>(1, total_steps - warmup)));
      return floor + 0.5 * (peak - floor) * (1.0 + std::cos(M_PI * progress));
    }
  }
}

}  // namespace nats
