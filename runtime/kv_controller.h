// runtime/kv_controller.h
//
// Holds the KV fraction of a NAtS model at a target by adapting the sparsity regulariser's lambda
// (nats.target_kv_fraction, nats.target_kv_gain; docs/posttraining.md "The KV-fraction controller").
// The reference picks lambda by hand per run and only measures the fraction it gets; this makes the budget
// the knob instead (dual ascent on the constraint "KV fraction = target").
//
// After each optimizer step the trainer passes the step's measured KV fraction of the inference types (argmax
// of the same logits, no Gumbel noise: what a cache keeps), as nats.target_kv_measure defines it (the mean
// cache over positions, as `nats eval` reports it, or the cache at the window's end), the mean over NAtS
// layers, averaged over all ranks, so every rank passes the same value:
//   log(lambda) += gain * (measured - target),   lambda clamped to [kMinLambda, kMaxLambda].
// The update uses the raw measurement, not a smoothed one: log(lambda) is already the running sum of the
// errors (integral action), which averages the per-step noise of the Gumbel sampling and the batches; an EMA
// in front of it would only add lag, and lag in an integral loop shows up as overshoot and oscillation.
// An EMA of the measurement (decay kEmaDecay) is kept for the progress line, where the raw value is noisy.
// Pure arithmetic on doubles: ranks that pass the same measurements hold bit-identical state, and a state
// restored from a checkpoint continues the series bit for bit.
#pragma once

#include <cstdint>

namespace nats {

struct KvControllerState {
  double lambda = 0;    // the lambda of the next step
  double ema = 0;       // EMA of the measured KV fraction (the first measurement itself at updates == 1)
  int64_t updates = 0;  // measurements seen
};

class KvController {
 public:
  static constexpr double kMinLambda = 1e-12, kMaxLambda = 1e2;
  static constexpr double kEmaDecay = 0.9;

  // target in (0, 1); a target <= 0 disables the controller (lambda stays initial_lambda). initial_lambda is
  // nats.lambda (clamped into the range, so that 0 can grow).
  KvController(double target, double gain, double initial_lambda);

  bool enabled() const { return target_ > 0; }
  double target() const { return target_; }
  const KvControllerState& state() const { return state_; }
  double lambda() const { return state_.lambda; }

  // One step's measured KV fraction; returns the new lambda. No-op (returns lambda()) when disabled.
  double Update(double measured_kv_fraction);
  // A checkpoint's state (resume, rollback).
  void Restore(const KvControllerState& state) { state_ = state; }

 private:
  double target_, gain_;
  KvControllerState state_;
};

}  // namespace nats
