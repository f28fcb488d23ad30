// AdamW against torch::optim::AdamW (the independent oracle), and ZeRO-1 against AdamW on every rank:
// parameters, gradient norms with clipping, and the optimizer state (each rank's shards compared with
// the same offsets of the non-sharded state; together the shards must cover everything exactly once).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "parallel/adamw.h"
#include "parallel/zero_optimizer.h"
#include "tests/parallel/test_world.h"

namespace nats::parallel {
namespace {

using testing::RandomTensor;
using testing::World;

// Sizes that divide by no rank count > 1: the ZeRO shards cut through parameters and need padding.
std::vector<OptimizerParam> MakeParams(uint64_t seed) {
  std::vector<OptimizerParam> out;
  const std::vector<std::vector<int64_t>> shapes = {{7, 3}, {5}, {11}, {2, 2}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    at::Tensor t = RandomTensor(seed + i, shapes[i], at::kFloat).requires_grad_(true);
    out.push_back({"p" + std::to_string(i), t, /*weight_decay=*/shapes[i].size() > 1});
  }
  return out;
}

void SetGrads(std::vector<OptimizerParam>& params, uint64_t seed) {
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].tensor.mutable_grad() = RandomTensor(seed + 31 * i, params[i].tensor.sizes(), at::kFloat);
  }
}

AdamWOptions Options() {
  AdamWOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.2;
  o.beta2 = 0.95;
  return o;
}

TEST(AdamW, MatchesTorchAdamW) {
  auto mine = MakeParams(10);
  auto theirs = MakeParams(10);
  std::vector<at::Tensor> decay, no_decay;
  for (auto& p : theirs) (p.weight_decay ? decay : no_decay).push_back(p.tensor);
  const AdamWOptions o = Options();
  auto group_options = [&](double wd) {
    auto g = std::make_unique<torch::optim::AdamWOptions>(o.lr);
    g->betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(wd);
    return g;
  };
  torch::optim::AdamW torch_opt({torch::optim::OptimizerParamGroup(decay, group_options(o.weight_decay)),
                                 torch::optim::OptimizerParamGroup(no_decay, group_options(0.0))});
  auto opt = AdamW::Create(mine, o);
  ASSERT_TRUE(opt.ok()) << opt.status();
  for (int step = 0; step < 4; ++step) {
    const double lr = 0.01 * (step + 1);  // a schedule: lr changes every step
    (*opt)->set_lr(lr);
    for (auto& group : torch_opt.param_groups())
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    SetGrads(mine, 50 + step);
    SetGrads(theirs, 50 + step);
    ASSERT_TRUE((*opt)->Step().ok());
    torch_opt.step();
  }
  for (size_t i = 0; i < mine.size(); ++i) {
    EXPECT_TRUE(at::allclose(mine[i].tensor, theirs[i].tensor, 1e-6, 1e-7))
        << mine[i].name << " max diff " << (mine[i].tensor - theirs[i].tensor).abs().max().item<double>();
  }
  EXPECT_EQ((*opt)->step_count(), 4);
}

// The fused one-pass update (the default) against the tensor-op form, on parameters large enough to be split
// over threads (16k-element chunks) and with and without weight decay.
TEST(AdamW, FusedPassMatchesTensorOps) {
  auto make = [] {
    std::vector<OptimizerParam> out;
    out.push_back({"big", RandomTensor(3, {70001}, at::kFloat).requires_grad_(true), /*weight_decay=*/true});
    out.push_back(
        {"bias", RandomTensor(4, {40000}, at::kFloat).requires_grad_(true), /*weight_decay=*/false});
    return out;
  };
  auto fused_params = make(), plain_params = make();
  AdamWOptions o = Options();
  auto fused = AdamW::Create(fused_params, o);
  o.fused = false;
  auto plain = AdamW::Create(plain_params, o);
  ASSERT_TRUE(fused.ok() && plain.ok());
  for (int step = 0; step < 5; ++step) {
    SetGrads(fused_params, 70 + step);
    SetGrads(plain_params, 70 + step);
    ASSERT_TRUE((*fused)->Step().ok());
    ASSERT_TRUE((*plain)->Step().ok());
  }
  for (size_t i = 0; i < fused_params.size(); ++i) {
    const at::Tensor diff = (fused_params[i].tensor - plain_params[i].tensor).abs();
    EXPECT_TRUE(at::allclose(fused_params[i].tensor, plain_params[i].tensor, 1e-6, 1e-7))
        << fused_params[i].name << " max diff " << diff.max().item<double>();
    // The update moved the parameters (a comparison of two no-ops would pass too).
    EXPECT_GT((fused_params[i].tensor - make()[i].tensor).abs().max().item<double>(), 1e-3);
  }
  const auto a = (*fused)->ExportState(), b = (*plain)->ExportState();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const at::Tensor x = a[i].tensor.to(at::kDouble), y = b[i].tensor.to(at::kDouble);
    EXPECT_TRUE(at::allclose(x, y, 1e-6, 5e-7))  // a few float ulps of values up to ~1
        << a[i].name << " max diff " << (x - y).abs().max().item<double>() << " of max "
        << y.abs().max().item<double>();
  }
}

TEST(AdamW, ClipGradNormMatchesTorch) {
  auto mine = MakeParams(20);
  auto theirs = MakeParams(20);
  SetGrads(mine, 70);
  SetGrads(theirs, 70);
  std::vector<at::Tensor> tensors;
  for (auto& p : theirs) tensors.push_back(p.tensor);
  const double want = torch::nn::utils::clip_grad_norm_(tensors, 0.5);
  auto opt = AdamW::Create(mine, Options());
  ASSERT_TRUE(opt.ok());
  auto norm = (*opt)->ClipGradNorm(0.5);
  ASSERT_TRUE(norm.ok());
  EXPECT_NEAR(*norm, want, 1e-5 * want);
  for (size_t i = 0; i < mine.size(); ++i) {
    EXPECT_TRUE(at::allclose(mine[i].tensor.grad(), theirs[i].tensor.grad(), 1e-5, 1e-7)) << mine[i].name;
  }
}

// Runs `steps` steps of clipped AdamW on the non-sharded reference and on ZeRO-1 over the world.
// reduce_gradients: every rank has its own gradients and ZeRO averages them (reduce-scatter); otherwise
// the gradients are already equal on all ranks (as after DataParallel) and ZeRO only slices.
void RunZero(bool reduce_gradients) {
  Communicator& comm = World();
  auto ref_params = MakeParams(40);
  auto zero_params = MakeParams(40);
  auto ref = AdamW::Create(ref_params, Options());
  ASSERT_TRUE(ref.ok());
  ZeroOptions zo;
  zo.reduce_gradients = reduce_gradients;
  auto zero = ZeroOptimizer::Create(zero_params, Options(), comm, zo);
  ASSERT_TRUE(zero.ok()) << zero.status();
  for (int step = 0; step < 3; ++step) {
    const uint64_t seed = 1000 * (step + 1);
    // Reference gradient: the average of what the ranks hold.
    for (size_t i = 0; i < ref_params.size(); ++i) {
      at::Tensor sum = at::zeros_like(ref_params[i].tensor);
      const int holders = reduce_gradients ? comm.size() : 1;
      for (int q = 0; q < holders; ++q) {
        sum += RandomTensor(seed + 100 * q + 31 * i, ref_params[i].tensor.sizes(), at::kFloat);
      }
      ref_params[i].tensor.mutable_grad() = sum / holders;
    }
    SetGrads(zero_params, seed + (reduce_gradients ? 100 * comm.rank() : 0));
    const double lr = 0.02 / (step + 1);
    (*ref)->set_lr(lr);
    (*zero)->set_lr(lr);
    auto want_norm = (*ref)->ClipGradNorm(1.0);
    auto got_norm = (*zero)->ClipGradNorm(1.0);
    ASSERT_TRUE(want_norm.ok() && got_norm.ok()) << got_norm.status();
    EXPECT_GT(*want_norm, 1.0);  // clipping is active
    EXPECT_NEAR(*got_norm, *want_norm, 1e-5 * *want_norm);
    ASSERT_TRUE((*ref)->Step().ok());
    ASSERT_TRUE((*zero)->Step().ok());
  }
  for (size_t i = 0; i < ref_params.size(); ++i) {
    EXPECT_TRUE(at::allclose(zero_params[i].tensor, ref_params[i].tensor, 1e-5, 1e-6))
        << ref_params[i].name << " max diff "
        << (zero_params[i].tensor - ref_params[i].tensor).abs().max().item<double>();
  }
  // State: each local shard equals the reference at the same offsets; shards cover each element once.
  std::map<std::string, at::Tensor> full;
  for (auto& s : (*ref)->ExportState()) full[s.name] = s.tensor;
  int64_t covered = 0;
  for (auto& s : (*zero)->ExportState()) {
    ASSERT_TRUE(full.count(s.name)) << s.name;
    if (s.name == "step") {
      EXPECT_EQ(s.tensor.item<int64_t>(), 3);
      continue;
    }
    covered += s.tensor.numel();
    EXPECT_TRUE(at::allclose(s.tensor, full[s.name].narrow(0, s.offset, s.tensor.numel()), 1e-5, 1e-7))
        << s.name;
  }
  at::Tensor total = at::full({1}, covered, at::kLong);
  ASSERT_TRUE(comm.AllReduce(total, ReduceOp::kSum).ok());
  int64_t numel = 0;
  for (auto& p : ref_params) numel += p.tensor.numel();
  EXPECT_EQ(total.item<int64_t>(), 2 * numel);
}

TEST(ZeroOptimizer, SlicedGradientsMatchAdamW) { RunZero(/*reduce_gradients=*/false); }
TEST(ZeroOptimizer, ReduceScatteredGradientsMatchAdamW) { RunZero(/*reduce_gradients=*/true); }

TEST(ZeroOptimizer, ImportsStateSavedWithAnotherWorldSize) {
  Communicator& comm = World();
  // Reference: two steps non-sharded, then export (as a 1-rank checkpoint would hold it).
  auto ref_params = MakeParams(60);
  auto ref = AdamW::Create(ref_params, Options());
  ASSERT_TRUE(ref.ok());
  for (int step = 0; step < 2; ++step) {
    SetGrads(ref_params, 300 + step);
    ASSERT_TRUE((*ref)->Step().ok());
  }
  const std::vector<NamedShard> saved = (*ref)->ExportState();
  auto zero_params = MakeParams(60);
  for (size_t i = 0; i < zero_params.size(); ++i) zero_params[i].tensor.detach().copy_(ref_params[i].tensor);
  auto zero = ZeroOptimizer::Create(zero_params, Options(), comm);
  ASSERT_TRUE(zero.ok());
  ASSERT_TRUE((*zero)->ImportState(saved).ok());
  EXPECT_EQ((*zero)->step_count(), 2);
  SetGrads(ref_params, 400);
  SetGrads(zero_params, 400);
  ASSERT_TRUE((*ref)->Step().ok());
  ASSERT_TRUE((*zero)->Step().ok());
  for (size_t i = 0; i < ref_params.size(); ++i) {
    EXPECT_TRUE(at::allclose(zero_params[i].tensor, ref_params[i].tensor, 1e-6, 1e-7)) << ref_params[i].name;
  }
  // A checkpoint that lacks part of the state is refused with a precise error.
  std::vector<NamedShard> partial(saved.begin() + 2, saved.end());
  auto fresh = AdamW::Create(MakeParams(60), Options());
  ASSERT_TRUE(fresh.ok());
  absl::Status s = (*fresh)->ImportState(partial);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
}

}  // namespace
}  // namespace nats::parallel
