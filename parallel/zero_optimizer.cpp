#include "parallel/zero_optimizer.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace nats::parallel {

ZeroOptimizer::ZeroOptimizer(std::vector<OptimizerParam> params, AdamWOptions options, Communicator& dp,
                             ZeroOptions zero)
    : AdamW(std::move(params), options), dp_(dp), zero_(zero) {}

absl::StatusOr<std::unique_ptr<ZeroOptimizer>> ZeroOptimizer::Create(std::vector<OptimizerParam> params,
                                                                     AdamWOptions options, Communicator& dp,
                                                                     ZeroOptions zero) {
  std::unique_ptr<ZeroOptimizer> opt(new ZeroOptimizer(std::move(params), options, dp, zero));
  int64_t total = 0;
  for (const auto& p : opt->params_) total += p.tensor.defined() ? p.tensor.numel() : 0;
  const int64_t world = dp.size();
  // Equal shards (collectives need equal counts); the last one is padded with zeros that stay zero.
  opt->shard_numel_ = (total + world - 1) / world;
  opt->shard_begin_ = dp.rank() * opt->shard_numel_;
  if (auto s = opt->Init(opt->shard_begin_, opt->shard_numel_); !s.ok()) return s;
  const auto options_1d = opt->exp_avg_.options();
  opt->grad_shard_ = at::zeros({opt->shard_numel_}, options_1d);
  opt->param_shard_ = at::zeros({opt->shard_numel_}, options_1d);
  opt->flat_params_ = at::zeros({opt->shard_numel_ * world}, options_1d);
  if (zero.reduce_gradients) opt->flat_grads_ = at::zeros({opt->shard_numel_ * world}, options_1d);
  return opt;
}

absl::Status ZeroOptimizer::LoadGradients() {
  at::NoGradGuard no_grad;
  if (zero_.reduce_gradients) {
    for (size_t i = 0; i < params_.size(); ++i) {
      const at::Tensor& t = params_[i].tensor;
      flat_grads_.narrow(0, param_offset_[i], t.numel()).copy_(t.grad().reshape({-1}));
    }
    return dp_.ReduceScatter(flat_grads_, grad_shard_, ReduceOp::kAvg);
  }
  for (const auto& s : segments_) {
    grad_shard_.narrow(0, s.local, s.end - s.begin)
        .copy_(params_[s.param].tensor.grad().reshape({-1}).narrow(0, s.begin, s.end - s.begin));
  }
  return absl::OkStatus();
}

at::Tensor ZeroOptimizer::GradView(const Segment& s) {
  return grad_shard_.narrow(0, s.local, s.end - s.begin);
}

at::Tensor ZeroOptimizer::ParamView(const Segment& s) {
  return param_shard_.narrow(0, s.local, s.end - s.begin);
}

absl::Status ZeroOptimizer::SumAcrossShards(at::Tensor& partial) {
  return dp_.AllReduce(partial, ReduceOp::kSum);
}

absl::Status ZeroOptimizer::BeforeUpdate() {
  // Re-read the parameters every step: a checkpoint load or a broadcast may have changed them.
  at::NoGradGuard no_grad;
  for (const auto& s : segments_) {
    param_shard_.narrow(0, s.local, s.end - s.begin)
        .copy_(params_[s.param].tensor.detach().view(-1).narrow(0, s.begin, s.end - s.begin));
  }
  return absl::OkStatus();
}

absl::Status ZeroOptimizer::PublishParameters() {
  if (auto s = dp_.AllGather(param_shard_, flat_params_); !s.ok()) return s;
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor t = params_[i].tensor.detach();
    t.view(-1).copy_(flat_params_.narrow(0, param_offset_[i], t.numel()));
  }
  return absl::OkStatus();
}

}  // namespace nats::parallel
