// The sparsity regulariser (docs/method.md 5.4) is charged once per sequence of the global batch whatever the
// layout (docs/training.md, "The sparsity regulariser"): Trainer::ForwardBackward gives one rank's gradients
// under micro-batching, dp 2, dp 2 x micro-batching, sp 2 and dp 2 x sp 2, at a lambda where the regulariser
// dominates the scorer-weight gradients. Before the fix, dp 2 charged lambda / 2 (a relative error of ~0.5 on
// the scorer gradients), which a loss-only comparison at lambda = 1e-8 could not see.
//
// The binary runs plainly (micro-batching only) and under mpirun -np 2 and -np 4
// (tests/runtime/CMakeLists.txt); every rank computes the single-rank reference itself with a local
// communicator.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "parallel/mpi_runtime.h"
#include "runtime/config.h"
#include "runtime/trainer.h"

namespace nats {
namespace {

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

int WorldSize() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return 1;
}

int WorldRank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return 0;
}

// A small NAtS model on the demo books with a regulariser strong enough to dominate the scorer gradients.
config::Config BaseConfig(double lambda) {
  const std::string source = Env("NATS_SOURCE_DIR", ".");
  const std::string data = Env("NATS_DATA_DIR", "data");
  auto cfg = LoadConfigFile(source + "/configs/tiny_nats.textproto");
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  for (const std::string& s :
       {"data.train_path=" + data + "/books/train.tok", "data.val_path=" + data + "/books/val.tok",
        std::string("model.d_model=64"), std::string("model.context_length=64"),
        std::string("model.n_kv_head=2"), std::string("nats.window=8"), absl::StrCat("nats.lambda=", lambda),
        std::string("train.batch_size=4"), std::string("train.threads=1"),
        std::string("train.eval_windows=4"), std::string("train.steps=1")}) {
    EXPECT_TRUE(ApplyOverride(s, &*cfg).ok()) << s;
  }
  return *cfg;
}

using Grads = std::map<std::string, at::Tensor>;

// The gradients of the first step's objective under `overrides` (a layout), from the trainer itself.
Grads StepGradients(config::Config cfg, const std::vector<std::string>& overrides, const std::string& name) {
  // One directory per layout and job; the ranks of a job share it (the config hash must agree).
  const std::string run_dir =
      (std::filesystem::temp_directory_path() / absl::StrCat("nats_reg_layout_", getppid(), "_", name))
          .string();
  EXPECT_TRUE(ApplyOverride("train.run_dir=" + run_dir, &cfg).ok());
  for (const std::string& s : overrides) EXPECT_TRUE(ApplyOverride(s, &cfg).ok()) << s;
  auto trainer = Trainer::Create(cfg);
  EXPECT_TRUE(trainer.ok()) << name << ": " << trainer.status();
  if (!trainer.ok()) return {};
  auto loss = (*trainer)->ForwardBackward();
  EXPECT_TRUE(loss.ok()) << name << ": " << loss.status();
  Grads grads;
  for (const auto& [key, p] : (*trainer)->NamedParameters()) grads[key] = p.grad().detach().clone();
  return grads;
}

double RelativeDifference(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>() /
         std::max(b.to(at::kDouble).norm().item<double>(), 1e-30);
}

class RegulariserLayoutTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string data = Env("NATS_DATA_DIR", "data");
    ASSERT_TRUE(std::filesystem::exists(data + "/books/train.tok"))
        << data << "/books/train.tok is missing: launch/run_tests.sh prepares it";
  }
  static void TearDownTestSuite() { parallel::FinalizeMpi(); }
};

// Checks every gradient of a layout against the single-rank one: scorer weights (where the regulariser acts)
// to 1e-6 relative, the others to 1e-5 (float32 sums in another order; the loss gradient is not what this
// test is about, runtime_dp_matches_single_rank covers it).
void ExpectSameGradients(const Grads& got, const Grads& want, const std::string& layout) {
  ASSERT_EQ(got.size(), want.size()) << layout;
  int scorers = 0;
  for (const auto& [key, g] : want) {
    const double diff = RelativeDifference(got.at(key), g);
    const bool scorer = key.find("scorer") != std::string::npos;
    scorers += scorer;
    EXPECT_LT(diff, scorer ? 1e-6 : 1e-5) << layout << ": gradient of " << key << " differs from one rank";
    if (scorer && WorldRank() == 0)
      std::printf("%-28s %-22s relative difference %.2e\n", layout.c_str(), key.c_str(), diff);
  }
  EXPECT_GT(scorers, 0) << "the model has no NAtS scorer";
}

TEST_F(RegulariserLayoutTest, ScorerGradientsEqualOneRankInEveryLayout) {
  const double lambda = 3e-3;
  const std::string one = "parallel.backend=LOCAL";
  const std::string tag = absl::StrCat("rank", WorldRank());
  const Grads reference = StepGradients(BaseConfig(lambda), {one}, "one_rank_" + tag);
  ASSERT_FALSE(reference.empty());

  // The regulariser must dominate the scorer gradients, or a wrong lambda scale would hide under the loss
  // part.
  const Grads no_regulariser = StepGradients(BaseConfig(0.0), {one}, "no_reg_" + tag);
  for (const auto& [key, g] : reference) {
    if (key.find("scorer") == std::string::npos) continue;
    const double loss_part = no_regulariser.at(key).norm().item<double>();
    const double regulariser_part = (g - no_regulariser.at(key)).norm().item<double>();
    EXPECT_GT(regulariser_part, 5 * loss_part) << key << ": raise lambda so that the regulariser dominates";
  }

  std::vector<std::pair<std::string, std::vector<std::string>>> layouts;
  switch (WorldSize()) {
    case 1:
      layouts = {{"micro 1", {one, "train.micro_batch_size=1"}},
                 {"micro 2", {one, "train.micro_batch_size=2"}}};
      break;
    case 2:
      layouts = {{"dp 2", {}},
                 {"dp 2 x micro 1", {"train.micro_batch_size=1"}},
                 {"sp 2 (full)", {"parallel.sp=2", "parallel.sp_exchange=FULL"}}};
      break;
    case 4:
      layouts = {
          {"dp 4", {}},
          {"dp 2 x sp 2 (full)", {"parallel.sp=2", "parallel.sp_exchange=FULL"}},
          {"dp 2 x sp 2 x micro 1",
           {"parallel.sp=2", "parallel.sp_exchange=FULL", "train.micro_batch_size=1"}},
          {"dp 2 x sp 2 ZeRO-1", {"parallel.sp=2", "parallel.sp_exchange=FULL", "parallel.zero_stage=1"}}};
      break;
    default:
      GTEST_SKIP() << "layouts are defined for 1, 2 and 4 ranks";
  }
  for (const auto& [layout, overrides] : layouts) {
    std::string name = layout;
    for (char& c : name) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    // Local layouts run on every rank alone: their directories are per rank.
    if (!overrides.empty() && overrides[0] == one) name += "_" + tag;
    ExpectSameGradients(StepGradients(BaseConfig(lambda), overrides, name), reference, layout);
  }
}

}  // namespace
}  // namespace nats
