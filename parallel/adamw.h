// parallel/adamw.h
//
// AdamW for the trainer, non-sharded (AdamW) and ZeRO-1 sharded (ZeroOptimizer, zero_optimizer.h), one
// code path: the optimizer state lives in flat buffers covering this rank's "shard" of the flattened
// parameter vector (all of it for AdamW), described by segments (parameter, range). Step() runs the same
// per-segment update in both; only where the gradient comes from and how parameters are published differ.
//
// Math = torch::optim::AdamW (LibTorch 1.13 / 2.x, amsgrad off), per parameter p with gradient g:
//   p *= 1 - lr * weight_decay                     (decoupled; only where OptimizerParam::weight_decay)
//   m = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g^2
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// One difference: a parameter whose grad is undefined is updated as if its gradient were zero (torch
// skips it), so that a sharded and a non-sharded run agree whatever the autograd graph touched.
//
// Typical step (dp ranks already averaged gradients with DataParallel):
//   opt->set_lr(schedule(step));  auto norm = opt->ClipGradNorm(1.0);  opt->Step();  opt->ZeroGrad();
//
// State export/import for checkpoints: NamedShard pieces addressed by global offsets into the flattened
// tensor "<param name>.exp_avg" / "<param name>.exp_avg_sq" (global_numel = param numel), plus "step"
// (a 1-element int64 tensor, replicated on every rank). Import accepts any set of pieces that covers this
// rank's ranges, so state saved with one world size loads into another.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nats::parallel {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // applied to parameters whose OptimizerParam::weight_decay is true
  // One fused pass per element over float32 CPU parameters (read p, g, m, v once, write p, m, v once) instead
  // of the tensor-op form (seven passes and a temporary per parameter). false: the tensor-op form, the
  // reference the fused pass is tested against; other dtypes and devices always take it.
  bool fused = true;
};

struct OptimizerParam {
  std::string name;          // unique; names the state in checkpoints
  at::Tensor tensor;         // the parameter (leaf, contiguous)
  bool weight_decay = true;  // false for biases, norms, embeddings as the config decides
};

// A 1-D piece of a flattened global tensor: elements [offset, offset + tensor.numel()) of `name`.
struct NamedShard {
  std::string name;
  int64_t global_numel = 0;
  int64_t offset = 0;
  at::Tensor tensor;
};

class AdamW {
 public:
  // Non-sharded: state for every parameter on this rank, no communication. InvalidArgument on
  // duplicate names, undefined or non-contiguous tensors.
  static absl::StatusOr<std::unique_ptr<AdamW>> Create(std::vector<OptimizerParam> params,
                                                       AdamWOptions options);
  virtual ~AdamW() = default;

  const AdamWOptions& options() const { return options_; }
  double lr() const { return options_.lr; }
  void set_lr(double lr) { options_.lr = lr; }
  int64_t step_count() const { return step_; }
  const std::vector<OptimizerParam>& params() const { return params_; }

  // Global L2 norm of the gradients the next Step() will use (across ranks for ZeRO).
  absl::StatusOr<double> GradNorm();
  // torch::nn::utils::clip_grad_norm_ semantics: scales gradients by max_norm / (norm + 1e-6) when that
  // is < 1; returns the norm before clipping. For ZeRO this scales the rank's gradient shard (param.grad()
  // itself is left alone).
  absl::StatusOr<double> ClipGradNorm(double max_norm);
  absl::Status Step();
  // Zeroes param.grad() in place (keeps the allocation; DataParallel relies on defined grads).
  void ZeroGrad();

  std::vector<NamedShard> ExportState() const;
  absl::Status ImportState(const std::vector<NamedShard>& shards);

 protected:
  // A contiguous run of one parameter's flattened elements [begin, end) held by this rank, stored at
  // [local, local + end - begin) of the shard buffers.
  struct Segment {
    int param = 0;
    int64_t begin = 0;
    int64_t end = 0;
    int64_t local = 0;
  };

  AdamW(std::vector<OptimizerParam> params, AdamWOptions options);
  // Validates params and builds segments_ / state buffers for the shard [shard_begin, shard_begin +
  // shard_numel) of the flattened parameter vector.
  absl::Status Init(int64_t shard_begin, int64_t shard_numel);

  // Makes GradView valid for this step (ZeRO: slice or reduce-scatter into the gradient shard).
  virtual absl::Status LoadGradients() { return absl::OkStatus(); }
  virtual at::Tensor GradView(const Segment& s);
  virtual at::Tensor ParamView(const Segment& s);
  // Sums a per-rank partial (sum of squares) over the ranks that share the shards.
  virtual absl::Status SumAcrossShards(at::Tensor& partial) { return absl::OkStatus(); }
  // Called after the update (ZeRO: all-gather into the parameters).
  virtual absl::Status PublishParameters() { return absl::OkStatus(); }
  virtual absl::Status BeforeUpdate() { return absl::OkStatus(); }

  absl::Status EnsureGradients();

  std::vector<OptimizerParam> params_;
  std::vector<int64_t> param_offset_;  // offset of each parameter in the flattened vector
  int64_t total_numel_ = 0;
  std::vector<Segment> segments_;
  at::Tensor exp_avg_, exp_avg_sq_;  // flat, one element per shard element
  AdamWOptions options_;
  int64_t step_ = 0;
  bool grads_loaded_ = false;
};

}  // namespace nats::parallel
