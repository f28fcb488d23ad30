// DataParallel over N ranks with batch B/N each must give the gradients (and, after AdamW, the
// parameters) that one process computes on the whole batch B. Checked for the bucketed hook path with a
// tiny bucket size (several buckets, gradient accumulation over two micro-steps), for the blocking twin,
// and for the bucketed path followed by ZeRO-1.
#include "parallel/data_parallel.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "parallel/adamw.h"
#include "parallel/zero_optimizer.h"
#include "tests/parallel/test_world.h"

namespace nats::parallel {
namespace {

using testing::RandomTensor;
using testing::World;

constexpr int64_t kBatch = 8;  // divisible by 1, 2 and 4 ranks, and by 2 micro-steps per rank up to 4 ranks
constexpr int kSteps = 2;

torch::nn::Sequential MakeModel() {
  torch::manual_seed(1234);  // identical initial weights on every rank
  return torch::nn::Sequential(torch::nn::Linear(8, 16), torch::nn::Tanh(), torch::nn::Linear(16, 16),
                               torch::nn::Tanh(), torch::nn::Linear(16, 4));
}

std::vector<OptimizerParam> Named(torch::nn::Sequential& model) {
  std::vector<OptimizerParam> out;
  for (const auto& item : model->named_parameters()) {
    out.push_back({item.key(), item.value(), /*weight_decay=*/item.value().dim() > 1});
  }
  return out;
}

at::Tensor Inputs(int step) { return RandomTensor(100 + step, {kBatch, 8}, at::kFloat); }
at::Tensor Targets(int step) { return RandomTensor(200 + step, {kBatch, 4}, at::kFloat); }

AdamWOptions Options() {
  AdamWOptions o;
  o.lr = 0.05;
  o.weight_decay = 0.1;
  return o;
}

// One process, whole batch: the reference trajectory. Returns grads of the last step and final params.
struct Trajectory {
  std::vector<at::Tensor> grads;   // gradients of the last step (after averaging)
  std::vector<at::Tensor> params;  // after kSteps optimizer steps
};

Trajectory Reference() {
  auto model = MakeModel();
  auto opt = AdamW::Create(Named(model), Options());
  TORCH_CHECK(opt.ok());
  Trajectory t;
  for (int step = 0; step < kSteps; ++step) {
    (*opt)->ZeroGrad();
    auto loss = torch::mse_loss(model->forward(Inputs(step)), Targets(step));
    loss.backward();
    t.grads.clear();
    for (auto& p : model->parameters()) t.grads.push_back(p.grad().clone());
    TORCH_CHECK((*opt)->Step().ok());
  }
  for (auto& p : model->parameters()) t.params.push_back(p.detach().clone());
  return t;
}

enum class Mode { kBucketed, kBlocking, kBucketedZero };

void ExpectClose(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(at::allclose(got[i], want[i], 1e-5, 1e-6))
        << what << " " << i << ": max diff " << (got[i] - want[i]).abs().max().item<double>();
  }
}

void RunDataParallel(Mode mode) {
  Communicator& comm = World();
  const Trajectory want = Reference();
  auto model = MakeModel();
  DataParallelOptions dp_options;
  dp_options.bucket_mb = 300.0 / (1024 * 1024);  // 300 bytes: many buckets for this 1.4k-parameter model
  DataParallel dp(model->parameters(), comm, dp_options);
  ASSERT_GE(dp.num_buckets(), 4);
  std::unique_ptr<AdamW> opt;
  if (mode == Mode::kBucketedZero) {
    auto zero = ZeroOptimizer::Create(Named(model), Options(), comm);
    ASSERT_TRUE(zero.ok()) << zero.status();
    opt = std::move(*zero);
  } else {
    auto plain = AdamW::Create(Named(model), Options());
    ASSERT_TRUE(plain.ok()) << plain.status();
    opt = std::move(*plain);
  }
  const int64_t local = kBatch / comm.size();
  const int64_t micro = local / 2;
  std::vector<at::Tensor> grads;
  for (int step = 0; step < kSteps; ++step) {
    opt->ZeroGrad();
    at::Tensor x = Inputs(step).narrow(0, comm.rank() * local, local);
    at::Tensor y = Targets(step).narrow(0, comm.rank() * local, local);
    for (int m = 0; m < 2; ++m) {
      // Two micro-steps of half the local batch; the mean over the whole batch is their mean.
      dp.set_sync(mode != Mode::kBlocking && m == 1);
      auto loss =
          torch::mse_loss(model->forward(x.narrow(0, m * micro, micro)), y.narrow(0, m * micro, micro)) / 2;
      loss.backward();
    }
    if (mode == Mode::kBlocking) {
      ASSERT_TRUE(dp.ReduceGradientsBlocking().ok());
    } else {
      ASSERT_TRUE(dp.FinishGradientSync().ok());
      EXPECT_EQ(dp.stats().buckets, dp.num_buckets());
      // Every parameter got a gradient, so the hooks launched every bucket before backward returned.
      EXPECT_EQ(dp.stats().launched_during_backward, dp.num_buckets());
    }
    int64_t numel = 0;
    for (auto& p : model->parameters()) numel += p.numel();
    EXPECT_EQ(dp.stats().bytes_reduced, numel * 4);
    grads.clear();
    for (auto& p : model->parameters()) grads.push_back(p.grad().clone());
    ASSERT_TRUE(opt->Step().ok());
  }
  ExpectClose(grads, want.grads, "gradient");
  std::vector<at::Tensor> params;
  for (auto& p : model->parameters()) params.push_back(p.detach().clone());
  ExpectClose(params, want.params, "parameter");
}

TEST(DataParallel, BucketedOverlapMatchesOneRankOnTheWholeBatch) { RunDataParallel(Mode::kBucketed); }
TEST(DataParallel, BlockingTwinMatchesOneRankOnTheWholeBatch) { RunDataParallel(Mode::kBlocking); }
TEST(DataParallel, BucketedWithZeroMatchesOneRankOnTheWholeBatch) { RunDataParallel(Mode::kBucketedZero); }

TEST(DataParallel, SecondBackwardInOneSyncStepIsAnError) {
  Communicator& comm = World();
  auto model = MakeModel();
  DataParallel dp(model->parameters(), comm);
  at::Tensor x = Inputs(0).narrow(0, 0, 2);
  for (int i = 0; i < 2; ++i) model->forward(x).sum().backward();
  EXPECT_EQ(dp.FinishGradientSync().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(DataParallel, BroadcastParametersMakesReplicasEqual) {
  Communicator& comm = World();
  auto model = MakeModel();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(comm.rank());
  }
  DataParallel dp(model->parameters(), comm);
  ASSERT_TRUE(dp.BroadcastParameters(0).ok());
  auto fresh = MakeModel();
  auto a = model->parameters();
  auto b = fresh->parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i]));
}

}  // namespace
}  // namespace nats::parallel
