#include "parallel/adamw.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"

namespace nats::parallel {
namespace {

// The update of AdamW::Step for one run of float elements, in one pass and in the tensor-op form's operation
// order (decay, moments, denominator, step), in float as ATen computes float tensors; so the two agree to
// rounding (tests/parallel/optimizer_test.cpp). Chunks of 16k elements over LibTorch's threads.
void FusedUpdate(float* p, const float* g, float* m, float* v, int64_t n, double decay_factor,
                 double step_size, double sqrt_bc2, double beta1, double beta2, double eps) {
  const float decay = static_cast<float>(decay_factor), b1 = static_cast<float>(beta1),
              b2 = static_cast<float>(beta2), one_minus_b1 = static_cast<float>(1.0 - beta1),
              one_minus_b2 = static_cast<float>(1.0 - beta2), bc2 = static_cast<float>(sqrt_bc2),
              e = static_cast<float>(eps), minus_step = static_cast<float>(-step_size);
  at::parallel_for(0, n, int64_t{1} << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float gi = g[i];
      const float mi = m[i] * b1 + one_minus_b1 * gi;
      const float vi = v[i] * b2 + one_minus_b2 * gi * gi;
      m[i] = mi;
      v[i] = vi;
      const float denom = std::sqrt(vi) / bc2 + e;
      p[i] = p[i] * decay + minus_step * (mi / denom);
    }
  });
}

// sum x^2 in double, in one read of x (at::sum(g.pow(2), kDouble) allocates g^2 and a double copy). Fixed
// 16k-element chunks summed in order, so the result does not depend on the thread count (exact resume).
double SumOfSquares(const float* x, int64_t n) {
  constexpr int64_t kChunk = int64_t{1} << 14;
  std::vector<double> partial((n + kChunk - 1) / kChunk, 0.0);
  at::parallel_for(0, static_cast<int64_t>(partial.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double acc = 0;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) acc += double{x[i]} * x[i];
      partial[c] = acc;
    }
  });
  double sum = 0;
  for (double p : partial) sum += p;
  return sum;
}

}  // namespace

AdamW::AdamW(std::vector<OptimizerParam> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {}

absl::StatusOr<std::unique_ptr<AdamW>> AdamW::Create(std::vector<OptimizerParam> params,
                                                     AdamWOptions options) {
  std::unique_ptr<AdamW> opt(new AdamW(std::move(params), options));
  int64_t total = 0;
  for (const auto& p : opt->params_) total += p.tensor.defined() ? p.tensor.numel() : 0;
  if (auto s = opt->Init(/*shard_begin=*/0, /*shard_numel=*/total); !s.ok()) return s;
  return opt;
}

absl::Status AdamW::Init(int64_t shard_begin, int64_t shard_numel) {
  std::set<std::string> names;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i];
    if (!p.tensor.defined() || !p.tensor.is_contiguous()) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer: parameter \"", p.name, "\" is undefined or not contiguous"));
    }
    if (!names.insert(p.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("optimizer: parameter name \"", p.name,
                                                     "\" appears twice; names address checkpoint state"));
    }
    if (p.tensor.scalar_type() != params_[0].tensor.scalar_type() ||
        p.tensor.device() != params_[0].tensor.device()) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer: parameter \"", p.name, "\" is ", c10::toString(p.tensor.scalar_type()),
                       " on ", p.tensor.device().str(), " but \"", params_[0].name, "\" is ",
                       c10::toString(params_[0].tensor.scalar_type()), " on ",
                       params_[0].tensor.device().str(), "; all parameters must share dtype and device"));
    }
    param_offset_.push_back(total_numel_);
    total_numel_ += p.tensor.numel();
  }
  const int64_t shard_end = shard_begin + shard_numel;
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t lo = std::max(param_offset_[i], shard_begin);
    const int64_t hi = std::min(param_offset_[i] + params_[i].tensor.numel(), shard_end);
    if (lo < hi) {
      segments_.push_back(
          {static_cast<int>(i), lo - param_offset_[i], hi - param_offset_[i], lo - shard_begin});
    }
  }
  const auto options =
      params_.empty() ? at::TensorOptions(at::kFloat) : params_[0].tensor.options().requires_grad(false);
  exp_avg_ = at::zeros({shard_numel}, options);
  exp_avg_sq_ = at::zeros({shard_numel}, options);
  return absl::OkStatus();
}

at::Tensor AdamW::GradView(const Segment& s) {
  return params_[s.param].tensor.grad().view(-1).narrow(0, s.begin, s.end - s.begin);
}

at::Tensor AdamW::ParamView(const Segment& s) {
  return params_[s.param].tensor.detach().view(-1).narrow(0, s.begin, s.end - s.begin);
}

absl::Status AdamW::EnsureGradients() {
  if (grads_loaded_) return absl::OkStatus();
  // Undefined grads count as zero; non-contiguous ones are made contiguous so GradView can alias them.
  for (auto& p : params_) {
    at::Tensor& t = p.tensor;
    if (!t.grad().defined()) {
      t.mutable_grad() = at::zeros_like(t);
    } else if (!t.grad().is_contiguous()) {
      t.mutable_grad() = t.grad().contiguous();
    }
  }
  if (auto s = LoadGradients(); !s.ok()) return s;
  grads_loaded_ = true;
  return absl::OkStatus();
}

absl::StatusOr<double> AdamW::GradNorm() {
  if (auto s = EnsureGradients(); !s.ok()) return s;
  at::NoGradGuard no_grad;
  at::Tensor partial = at::zeros({1}, exp_avg_.options().dtype(at::kDouble));
  double sum = 0;
  for (const auto& s : segments_) {
    at::Tensor g = GradView(s);
    if (g.is_cpu() && g.scalar_type() == at::kFloat && g.is_contiguous()) {
      sum += SumOfSquares(g.data_ptr<float>(), g.numel());
    } else {
      sum += at::sum(g.pow(2), at::kDouble).item<double>();
    }
  }
  partial.fill_(sum);
  if (auto s = SumAcrossShards(partial); !s.ok()) return s;
  return std::sqrt(partial.item<double>());
}

absl::StatusOr<double> AdamW::ClipGradNorm(double max_norm) {
  auto norm = GradNorm();
  if (!norm.ok()) return norm.status();
  const double coef = max_norm / (*norm + 1e-6);
  if (coef < 1.0) {
    at::NoGradGuard no_grad;
    for (const auto& s : segments_) GradView(s).mul_(coef);
  }
  return *norm;
}

absl::Status AdamW::Step() {
  if (auto s = EnsureGradients(); !s.ok()) return s;
  if (auto s = BeforeUpdate(); !s.ok()) return s;
  at::NoGradGuard no_grad;
  ++step_;
  const double bias_correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bias_correction2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_));
  const double step_size = options_.lr / bias_correction1;
  const double sqrt_bc2 = std::sqrt(bias_correction2);
  for (const auto& s : segments_) {
    at::Tensor p = ParamView(s);
    at::Tensor g = GradView(s);
    const int64_t n = s.end - s.begin;
    at::Tensor m = exp_avg_.narrow(0, s.local, n);
    at::Tensor v = exp_avg_sq_.narrow(0, s.local, n);
    const bool decay = params_[s.param].weight_decay;
    if (options_.fused && p.is_cpu() && p.scalar_type() == at::kFloat && g.scalar_type() == at::kFloat &&
        p.is_contiguous() && g.is_contiguous()) {
      FusedUpdate(p.data_ptr<float>(), g.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), n,
                  decay ? 1.0 - options_.lr * options_.weight_decay : 1.0, step_size, sqrt_bc2,
                  options_.beta1, options_.beta2, options_.eps);
      continue;
    }
    // Same operation order as torch::optim::AdamW so the two agree to rounding.
    if (decay) p.mul_(1.0 - options_.lr * options_.weight_decay);
    m.mul_(options_.beta1).add_(g, 1.0 - options_.beta1);
    v.mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
    at::Tensor denom = (v.sqrt() / sqrt_bc2).add_(options_.eps);
    p.addcdiv_(m, denom, -step_size);
  }
  grads_loaded_ = false;
  return PublishParameters();
}

void AdamW::ZeroGrad() {
  for (auto& p : params_) {
    if (p.tensor.grad().defined()) p.tensor.mutable_grad().zero_();
  }
  grads_loaded_ = false;
}

std::vector<NamedShard> AdamW::ExportState() const {
  std::vector<NamedShard> out;
  for (const auto& s : segments_) {
    const auto& p = params_[s.param];
    const int64_t n = s.end - s.begin;
    out.push_back({p.name + ".exp_avg", p.tensor.numel(), s.begin, exp_avg_.narrow(0, s.local, n).clone()});
    out.push_back(
        {p.name + ".exp_avg_sq", p.tensor.numel(), s.begin, exp_avg_sq_.narrow(0, s.local, n).clone()});
  }
  at::Tensor step = at::empty({1}, at::kLong);
  step.data_ptr<int64_t>()[0] = step_;
  out.push_back({"step", 1, 0, step});
  return out;
}

absl::Status AdamW::ImportState(const std::vector<NamedShard>& shards) {
  std::map<std::string, std::vector<const NamedShard*>> by_name;
  for (const auto& s : shards) by_name[s.name].push_back(&s);
  auto step_it = by_name.find("step");
  if (step_it == by_name.end() || step_it->second.front()->tensor.numel() != 1) {
    return absl::NotFoundError(
        "optimizer state: no \"step\" entry; the checkpoint's optimizer state is incomplete");
  }
  at::NoGradGuard no_grad;
  for (const auto& seg : segments_) {
    const auto& p = params_[seg.param];
    const int64_t n = seg.end - seg.begin;
    for (const bool second_moment : {false, true}) {
      const std::string name = p.name + (second_moment ? ".exp_avg_sq" : ".exp_avg");
      at::Tensor target = (second_moment ? exp_avg_sq_ : exp_avg_).narrow(0, seg.local, n);
      at::Tensor covered = at::zeros({n}, at::kBool);
      auto it = by_name.find(name);
      if (it != by_name.end()) {
        for (const NamedShard* piece : it->second) {
          if (piece->global_numel != p.tensor.numel()) {
            return absl::InvalidArgumentError(
                absl::StrCat("optimizer state \"", name, "\" has ", piece->global_numel,
                             " elements but the parameter has ", p.tensor.numel(),
                             "; the checkpoint belongs to a different model"));
          }
          const int64_t lo = std::max(seg.begin, piece->offset);
          const int64_t hi = std::min(seg.end, piece->offset + piece->tensor.numel());
          if (lo >= hi) continue;
          target.narrow(0, lo - seg.begin, hi - lo)
              .copy_(piece->tensor.reshape({-1}).narrow(0, lo - piece->offset, hi - lo));
          covered.narrow(0, lo - seg.begin, hi - lo).fill_(true);
        }
      }
      const int64_t got = covered.sum().item<int64_t>();
      if (got != n) {
        return absl::NotFoundError(absl::StrCat("optimizer state \"", name, "\": elements [", seg.begin, ", ",
                                                seg.end, ") are needed on this rank but only ", got,
                                                " of them are present in the loaded shards"));
      }
    }
  }
  step_ = step_it->second.front()->tensor.to(at::kLong).item<int64_t>();
  return absl::OkStatus();
}

}  // namespace nats::parallel
