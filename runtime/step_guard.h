// runtime/step_guard.h
//
// Whether an optimizer step is applied (issue 14, "bad steps"; the idea of llm.c's outlier detector). A step
// is bad when its loss or gradient norm is NaN or infinite (guard.skip_nonfinite), or when its loss or
// gradient norm lies more than guard.loss_zscore / guard.grad_norm_zscore standard deviations above the mean
// of the last guard.window accepted steps. The trainer skips a bad step (no optimizer update; its batch is
// consumed), and after guard.max_bad_steps bad steps in a row rolls back to the newest checkpoint and goes on
// with the data after the bad window.
//
// Pure logic on numbers every rank already shares (the loss averaged over ranks, the global gradient norm),
// so every rank reaches the same verdict; the trainer still agrees on it with one all-reduce, so that a value
// that differs on one rank cannot split the ranks. The window travels in checkpoints (State/Restore), so a
// resumed run decides as the uninterrupted one would.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/config.pb.h"

namespace nats {

struct StepVerdict {
  bool bad = false;
  std::string reason;  // "loss is nan", "loss z-score 9.1 > 6 (mean 3.20, std 0.05 over 128 steps)", ...
};

class StepGuard {
 public:
  explicit StepGuard(const config::GuardConfig& config);

  // The verdict on a step with this loss and (unclipped) gradient norm; changes nothing.
  StepVerdict Check(double loss, double grad_norm) const;
  // Records an applied step: its numbers join the window and the bad-step streak ends.
  void Accept(double loss, double grad_norm);
  // Records a skipped step; returns the number of bad steps in a row, this one included.
  int64_t Reject() { return ++bad_in_a_row_; }
  // After a rollback the streak starts again; the window keeps what the accepted steps taught it.
  void ResetStreak() { bad_in_a_row_ = 0; }

  int64_t bad_in_a_row() const { return bad_in_a_row_; }
  bool ShouldRollBack() const {
    return config_.max_bad_steps() > 0 && bad_in_a_row_ >= config_.max_bad_steps();
  }

  // The window as flat numbers (losses, then gradient norms) for the checkpoint manifest, and back.
  std::vector<double> LossWindow() const { return {losses_.begin(), losses_.end()}; }
  std::vector<double> GradNormWindow() const { return {grad_norms_.begin(), grad_norms_.end()}; }
  void Restore(const std::vector<double>& losses, const std::vector<double>& grad_norms);

 private:
  config::GuardConfig config_;
  std::deque<double> losses_, grad_norms_;
  int64_t bad_in_a_row_ = 0;
};

// Parses the fault-injection spec "BATCH:FACTOR,BATCH:FACTOR" (FACTOR a number, nan or inf) of
// TrainOptions::fault_loss_scale; InvalidArgument naming NATS_FAULT_LOSS_SCALE on anything else.
absl::StatusOr<std::map<int64_t, double>> ParseFaultLossScale(absl::string_view spec);

}  // namespace nats
