// parallel/zero_optimizer.h
//
// ZeRO-1 AdamW (llm.c's zero stage 1, DeepSpeed stage 1): the flattened parameter vector (parameters
// in the given order, padded with zeros to a multiple of dp) is cut into dp equal contiguous shards;
// rank r keeps AdamW state only for elements [r * S, (r + 1) * S), S = ceil(N / dp). A step:
//   1. gradient shard: by default the gradients are ALREADY averaged over dp (DataParallel overlaps that
//      all-reduce with backward) and each rank just slices its shard; with
//      ZeroOptions::reduce_gradients = true the optimizer reduce-scatters (average) the flat local
//      gradients itself (half the traffic of all-reduce, no overlap; for callers without DataParallel);
//   2. grad norm = sqrt(all-reduce(sum of squares over the shard)); clipping scales the shard;
//   3. the shared AdamW update (adamw.h) on the shard;
//   4. all-gather of the updated shards, copied back into every parameter.
// Same results as AdamW on every rank up to float rounding. All parameters must share one dtype and
// device (the communicator's).
#pragma once

#include "parallel/adamw.h"
#include "parallel/communicator.h"

namespace nats::parallel {

struct ZeroOptions {
  bool reduce_gradients = false;
};

class ZeroOptimizer : public AdamW {
 public:
  // `dp` (the data-parallel communicator) must outlive the optimizer.
  static absl::StatusOr<std::unique_ptr<ZeroOptimizer>> Create(std::vector<OptimizerParam> params,
                                                               AdamWOptions options, Communicator& dp,
                                                               ZeroOptions zero = {});

  int64_t shard_numel() const { return shard_numel_; }
  int64_t shard_begin() const { return shard_begin_; }

 protected:
  absl::Status LoadGradients() override;
  at::Tensor GradView(const Segment& s) override;
  at::Tensor ParamView(const Segment& s) override;
  absl::Status SumAcrossShards(at::Tensor& partial) override;
  absl::Status BeforeUpdate() override;
  absl::Status PublishParameters() override;

 private:
  ZeroOptimizer(std::vector<OptimizerParam> params, AdamWOptions options, Communicator& dp, ZeroOptions zero);

  Communicator& dp_;
  ZeroOptions zero_;
  int64_t shard_numel_ = 0;
  int64_t shard_begin_ = 0;
  at::Tensor grad_shard_;   // [S]
  at::Tensor param_shard_;  // [S] this rank's updated parameters (all-gather input)
  at::Tensor flat_params_;  // [S * dp] all-gather output
  at::Tensor flat_grads_;   // [S * dp] reduce-scatter input (reduce_gradients only)
};

}  // namespace nats::parallel
