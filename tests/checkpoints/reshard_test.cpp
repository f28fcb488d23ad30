// Resharding is a read: a checkpoint saved by one job (ctest: `mpirun -np 2 ... --gtest_filter=Reshard.Save`)
// is loaded by separate jobs of another world size (-np 1 and -np 4, `Reshard.Load*`), through the
// directory in NATS_CKPT_RESHARD_DIR. Separate mpirun jobs rather than a split communicator, because
// that is the real situation: nothing but the files carries over. Run plainly (no variable) the binary
// saves and loads in one process.
//
// The state: the synthetic tensors of test_state.h (exact comparison) and the ZeRO-1 AdamW state and
// parameters after two steps, compared with a non-sharded AdamW computed locally (float tolerance: the
// ZeRO and plain updates agree up to rounding).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "checkpoints/checkpoint_dir.h"
#include "parallel/zero_optimizer.h"
#include "runtime/checkpointing.h"
#include "tests/checkpoints/test_state.h"
#include "tests/parallel/test_world.h"

namespace nats {
namespace {

using parallel::testing::World;

bool DirFromEnvironment() {
  const char* env = std::getenv("NATS_CKPT_RESHARD_DIR");
  return env != nullptr && *env != '\0';
}

std::string Dir() {
  static const std::string dir = DirFromEnvironment() ? std::string(std::getenv("NATS_CKPT_RESHARD_DIR"))
                                                      : checkpoint_testing::SharedTempDir(World(), "reshard");
  return dir;
}

// A plain run's scratch directory goes when the tests are done (ctest's fixture directory stays for
// the load jobs and is cleaned by the next save job's fixture).
class RemoveScratchDir : public ::testing::Environment {
 public:
  void TearDown() override {
    if (!DirFromEnvironment()) checkpoint_testing::RemoveSharedDir(World(), Dir());
  }
};
const auto* const kRemoveScratch = ::testing::AddGlobalTestEnvironment(new RemoveScratchDir());

std::vector<parallel::OptimizerParam> MakeParams() {
  std::vector<parallel::OptimizerParam> params;
  const std::vector<std::vector<int64_t>> shapes = {{7, 3}, {5}, {11}, {2, 2}, {1001}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    params.push_back({absl::StrCat("p", i),
                      checkpoint_testing::SeededTensor(i, shapes[i], at::kFloat).requires_grad_(true)});
  }
  return params;
}

void TwoSteps(std::vector<parallel::OptimizerParam>& params, parallel::AdamW& opt) {
  for (int step = 0; step < 2; ++step) {
    for (size_t i = 0; i < params.size(); ++i) {
      params[i].tensor.mutable_grad() =
          checkpoint_testing::SeededTensor(100 + 10 * step + i, params[i].tensor.sizes(), at::kFloat);
    }
    ASSERT_TRUE(opt.Step().ok());
  }
}

parallel::AdamWOptions Options() {
  parallel::AdamWOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.1;
  return o;
}

TEST(Reshard, Save) {
  auto& comm = World();
  auto state = checkpoint_testing::SyntheticState(comm.rank(), comm.size());
  auto params = MakeParams();
  auto opt = parallel::ZeroOptimizer::Create(params, Options(), comm);
  ASSERT_TRUE(opt.ok()) << opt.status();
  TwoSteps(params, **opt);
  for (auto& st : FromNamedShards((*opt)->ExportState(), "optim/zero/")) state.push_back(st);
  for (const auto& p : params) state.push_back(WholeTensor("model/" + p.name, p.tensor));
  checkpoint::Manifest header;
  header.set_zero_stage(1);
  header.set_dp(comm.size());
  auto saved = SaveCheckpoint(comm, Dir(), 2, state, header, CaptureCpuRngState(), {});
  ASSERT_TRUE(saved.ok()) << saved.status();
}

TEST(Reshard, LoadSyntheticStateInAnyWorldSize) {
  auto& comm = World();
  auto manifest = checkpoint::ReadManifest(*checkpoint::FindLatestCheckpoint(Dir()));
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  std::printf("rank %d of %d loads a checkpoint saved by %d ranks\n", comm.rank(), comm.size(),
              manifest->world_size());
  // This rank's pieces in this world's layouts (different from the saving world's when sizes differ).
  auto targets = checkpoint_testing::SyntheticState(comm.rank(), comm.size());
  for (auto& t : targets) t.tensor = at::zeros_like(t.tensor);
  auto loaded = LoadCheckpoint(comm, Dir(), targets);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto want = checkpoint_testing::SyntheticState(comm.rank(), comm.size());
  ASSERT_EQ(targets.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(at::equal(targets[i].tensor, want[i].tensor)) << want[i].name;
}

TEST(Reshard, LoadZeroOptimizerStateInAnyWorldSize) {
  auto& comm = World();
  // Reference: the non-sharded AdamW after the same two steps, on this rank alone.
  auto ref_params = MakeParams();
  auto ref = parallel::AdamW::Create(ref_params, Options());
  ASSERT_TRUE(ref.ok());
  TwoSteps(ref_params, **ref);

  auto params = MakeParams();
  auto opt = parallel::ZeroOptimizer::Create(params, Options(), comm);
  ASSERT_TRUE(opt.ok());
  std::vector<StateTensor> targets = FromNamedShards((*opt)->ExportState(), "optim/zero/");
  for (const auto& p : params) targets.push_back(WholeTensor("model/" + p.name, p.tensor));
  auto loaded = LoadCheckpoint(comm, Dir(), targets);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE((*opt)->ImportState(ToNamedShards(targets, "optim/zero/")).ok());
  EXPECT_EQ((*opt)->step_count(), 2);
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(at::allclose(params[i].tensor, ref_params[i].tensor, 1e-5, 1e-6)) << params[i].name;
  }
  // Each exported piece of the resharded optimizer equals the same range of the reference state.
  std::map<std::string, at::Tensor> ref_state;
  for (const auto& s : (*ref)->ExportState()) ref_state[s.name] = s.tensor;
  for (const auto& s : (*opt)->ExportState()) {
    at::Tensor want = ref_state.at(s.name).reshape({-1}).narrow(0, s.offset, s.tensor.numel());
    EXPECT_TRUE(at::allclose(s.tensor.reshape({-1}), want, 1e-5, 1e-7)) << s.name;
  }
}

}  // namespace
}  // namespace nats
