#include "runtime/kv_controller.h"

#include <algorithm>
#include <cmath>

namespace nats {

KvController::KvController(double target, double gain, double initial_lambda) : target_(target), gain_(gain) {
  state_.lambda = enabled() ? std::clamp(initial_lambda, kMinLambda, kMaxLambda) : initial_lambda;
}

double KvController::Update(double measured) {
  if (!enabled()) return state_.lambda;
  ++state_.updates;
  state_.ema = state_.updates == 1 ? measured : kEmaDecay * state_.ema + (1 - kEmaDecay) * measured;
  // Multiplicative steps: the useful lambdas span many decades (1e-9 .. 1e-3), so the controller walks in log
  // space; too many kept entries (measured > target) raise lambda.
  const double log_lambda = std::log(state_.lambda) + gain_ * (measured - target_);
  state_.lambda = std::clamp(std::exp(log_lambda), kMinLambda, kMaxLambda);
  return state_.lambda;
}

}  // namespace nats
