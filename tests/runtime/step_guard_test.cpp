// Bad steps (runtime/step_guard.h, issue 14 section 4): the guard's rules on synthetic numbers, and the real
// trainer with a NaN or a loss spike injected into chosen batches (TrainOptions::fault_loss_scale, on
// data-parallel rank 0 only). Runs plainly and under mpirun -np 2, where the other rank must skip with it.
#include "runtime/step_guard.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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

config::GuardConfig Guard(double loss_z, int min_history, int max_bad) {
  config::GuardConfig g;
  g.set_loss_zscore(loss_z);
  g.set_min_history(min_history);
  g.set_max_bad_steps(max_bad);
  return g;
}

TEST(StepGuard, NonFiniteLossOrGradientNormIsBad) {
  StepGuard guard(Guard(0, 4, 3));
  EXPECT_FALSE(guard.Check(3.0, 1.0).bad);
  EXPECT_TRUE(guard.Check(std::nan(""), 1.0).bad);
  EXPECT_NE(guard.Check(std::nan(""), 1.0).reason.find("loss is nan"), std::string::npos);
  EXPECT_TRUE(guard.Check(3.0, INFINITY).bad);
  EXPECT_NE(guard.Check(3.0, INFINITY).reason.find("gradient norm is inf"), std::string::npos);
  config::GuardConfig off;
  off.set_skip_nonfinite(false);
  EXPECT_FALSE(StepGuard(off).Check(std::nan(""), 1.0).bad);
}

TEST(StepGuard, LossSpikeNeedsHistoryAndIsJudgedAgainstTheWindow) {
  StepGuard guard(Guard(/*loss_z=*/5, /*min_history=*/4, /*max_bad=*/3));
  EXPECT_FALSE(guard.Check(100.0, 1.0).bad) << "no history yet: nothing is a spike";
  for (double loss : {3.0, 3.1, 2.9, 3.0}) guard.Accept(loss, 1.0);
  EXPECT_FALSE(guard.Check(3.2, 1.0).bad);          // z = 2.5
  EXPECT_FALSE(guard.Check(0.5, 1.0).bad);          // a drop is never a spike
  const StepVerdict spike = guard.Check(4.0, 1.0);  // z = 12
  EXPECT_TRUE(spike.bad);
  EXPECT_NE(spike.reason.find("z-score"), std::string::npos) << spike.reason;
  // Gradient norms are judged only when their limit is set.
  EXPECT_FALSE(guard.Check(3.0, 1e6).bad);
  config::GuardConfig g = Guard(0, 4, 3);
  g.set_grad_norm_zscore(5);
  StepGuard norms(g);
  for (double n : {1.0, 1.1, 0.9, 1.0}) norms.Accept(3.0, n);
  EXPECT_TRUE(norms.Check(3.0, 10.0).bad);
}

TEST(StepGuard, FlatHistoryIsNoSignalAndTheWindowSlides) {
  config::GuardConfig g = Guard(3, 2, 0);
  g.set_window(3);
  StepGuard guard(g);
  for (int i = 0; i < 5; ++i) guard.Accept(2.0, 1.0);
  EXPECT_FALSE(guard.Check(2.5, 1.0).bad) << "a constant loss has no spread to judge by";
  for (double loss : {1.0, 2.0, 3.0}) guard.Accept(loss, 1.0);
  EXPECT_EQ(guard.LossWindow(), (std::vector<double>{1.0, 2.0, 3.0}));
  StepGuard restored(g);
  restored.Restore(guard.LossWindow(), guard.GradNormWindow());
  EXPECT_EQ(restored.Check(9.0, 1.0).reason, guard.Check(9.0, 1.0).reason);
}

TEST(StepGuard, StreakTriggersRollbackAndAnAppliedStepEndsIt) {
  StepGuard guard(Guard(0, 4, 3));
  EXPECT_EQ(guard.Reject(), 1);
  EXPECT_EQ(guard.Reject(), 2);
  EXPECT_FALSE(guard.ShouldRollBack());
  guard.Accept(3.0, 1.0);
  EXPECT_EQ(guard.bad_in_a_row(), 0);
  for (int i = 0; i < 3; ++i) guard.Reject();
  EXPECT_TRUE(guard.ShouldRollBack());
  EXPECT_FALSE(StepGuard(Guard(0, 4, /*max_bad=*/0)).ShouldRollBack());
}

TEST(StepGuard, ParsesTheFaultSpec) {
  auto spec = ParseFaultLossScale("5:nan, 9:1e4");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(std::isnan(spec->at(5)));
  EXPECT_EQ(spec->at(9), 1e4);
  EXPECT_FALSE(ParseFaultLossScale("5").ok());
  EXPECT_FALSE(ParseFaultLossScale("x:2").ok());
  EXPECT_NE(std::string(ParseFaultLossScale("-1:2").status().message()).find("NATS_FAULT_LOSS_SCALE"),
            std::string::npos);
}

// The trainer on a small dense model over the demo books.
class GuardedTrainingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(std::filesystem::exists(Env("NATS_DATA_DIR", "data") + "/books/train.tok"))
        << "data/books/train.tok is missing: launch/run_tests.sh prepares it";
  }
  static void TearDownTestSuite() { parallel::FinalizeMpi(); }

  struct Run {
    TrainSummary summary;
    std::vector<at::Tensor> params;
    std::string run_dir;
  };

  // `name` must be unique per test; the ranks of one mpirun job share the directory (the config hash agrees).
  Run Train(const std::string& name, const std::map<int64_t, double>& faults,
            const std::vector<std::string>& sets) {
    const std::string data = Env("NATS_DATA_DIR", "data");
    auto cfg = LoadConfigFile(Env("NATS_SOURCE_DIR", ".") + "/configs/tiny.textproto");
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    Run run;
    run.run_dir =
        (std::filesystem::temp_directory_path() / absl::StrCat("nats_guard_", getppid(), "_", name)).string();
    std::vector<std::string> all = {"data.train_path=" + data + "/books/train.tok",
                                    "data.val_path=" + data + "/books/val.tok",
                                    "model.d_model=64",
                                    "model.context_length=32",
                                    "train.batch_size=4",
                                    "train.threads=1",
                                    "train.eval_windows=2",
                                    "train.eval_interval=0",
                                    "train.log_interval=100",
                                    "train.steps=8",
                                    "train.run_dir=" + run.run_dir};
    all.insert(all.end(), sets.begin(), sets.end());
    for (const std::string& s : all) EXPECT_TRUE(ApplyOverride(s, &*cfg).ok()) << s;
    TrainOptions options;
    options.fault_loss_scale = faults;
    auto trainer = Trainer::Create(*cfg, options);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    if (!trainer.ok()) return run;
    auto summary = (*trainer)->Train();
    EXPECT_TRUE(summary.ok()) << summary.status();
    if (summary.ok()) run.summary = *summary;
    for (const auto& [key, p] : (*trainer)->NamedParameters()) run.params.push_back(p.detach().clone());
    return run;
  }

  // The JSON lines of this rank's metrics files in the run directory that contain `needle`.
  static std::vector<std::string> LogLines(const std::string& run_dir, const std::string& needle) {
    std::vector<std::string> lines;
    for (const auto& entry : std::filesystem::directory_iterator(run_dir)) {
      if (entry.path().extension() != ".jsonl") continue;
      std::ifstream in(entry.path());
      for (std::string line; std::getline(in, line);) {
        if (line.find(needle) != std::string::npos) lines.push_back(line);
      }
    }
    return lines;
  }
};

TEST_F(GuardedTrainingTest, NanBatchIsSkippedOnEveryRankAndTrainingGoesOn) {
  Run run = Train("nan_skip", {{3, std::nan("")}}, {});
  EXPECT_EQ(run.summary.steps, 8);
  EXPECT_EQ(run.summary.skipped_steps, 1);
  EXPECT_EQ(run.summary.rollbacks, 0);
  for (const at::Tensor& p : run.params) EXPECT_TRUE(p.isfinite().all().item<bool>());
  const auto lines = LogLines(run.run_dir, "\"bad_step\"");
  ASSERT_FALSE(lines.empty());
  EXPECT_NE(lines[0].find("loss is nan"), std::string::npos) << lines[0];
}

TEST_F(GuardedTrainingTest, RollbackEqualsSkippingTheWholeWindowBitForBit) {
  // Rolled back: batches 0-4 give steps 1-5 (checkpoints at 2 and 4), batches 5-7 are bad, the third bad step
  // rolls back to step 4 and batches 8-11 give steps 5-8. Skipped only: batches 0-3 give steps 1-4, batches
  // 4-7 are skipped, batches 8-11 give steps 5-8. The same data reaches the same optimizer state.
  const double nan = std::nan("");
  Run rolled = Train("rollback", {{5, nan}, {6, nan}, {7, nan}},
                     {"guard.max_bad_steps=3", "checkpoint.interval_steps=2"});
  Run skipped = Train("skip_window", {{4, nan}, {5, nan}, {6, nan}, {7, nan}}, {"guard.max_bad_steps=0"});
  EXPECT_EQ(rolled.summary.rollbacks, 1);
  EXPECT_EQ(rolled.summary.skipped_steps, 3);
  EXPECT_EQ(skipped.summary.skipped_steps, 4);
  EXPECT_EQ(rolled.summary.steps, 8);
  ASSERT_EQ(rolled.params.size(), skipped.params.size());
  for (size_t i = 0; i < rolled.params.size(); ++i)
    EXPECT_TRUE(at::equal(rolled.params[i], skipped.params[i])) << i;
  EXPECT_FALSE(LogLines(rolled.run_dir, "\"rollback\"").empty());
}

TEST_F(GuardedTrainingTest, RollbackWithoutACheckpointStopsWithTheFix) {
  const double nan = std::nan("");
  const std::string data = Env("NATS_DATA_DIR", "data");
  auto cfg = LoadConfigFile(Env("NATS_SOURCE_DIR", ".") + "/configs/tiny.textproto");
  ASSERT_TRUE(cfg.ok());
  for (const std::string& s : {"data.train_path=" + data + "/books/train.tok",
                               "data.val_path=" + data + "/books/val.tok", std::string("model.d_model=64"),
                               std::string("model.context_length=32"), std::string("train.threads=1"),
                               std::string("train.eval_windows=2"), std::string("guard.max_bad_steps=2"),
                               "train.run_dir=" + (std::filesystem::temp_directory_path() /
                                                   absl::StrCat("nats_guard_", getppid(), "_no_ckpt"))
                                                      .string()}) {
    ASSERT_TRUE(ApplyOverride(s, &*cfg).ok()) << s;
  }
  TrainOptions options;
  options.fault_loss_scale = {{0, nan}, {1, nan}};
  auto trainer = Trainer::Create(*cfg, options);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto summary = (*trainer)->Train();
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find("checkpoint.interval_steps"), std::string::npos)
      << summary.status();
}

TEST_F(GuardedTrainingTest, LossSpikeIsSkippedByTheZScore) {
  Run run = Train("spike", {{10, 1e3}},
                  {"train.steps=12", "guard.loss_zscore=6", "guard.min_history=4", "guard.max_bad_steps=0"});
  EXPECT_EQ(run.summary.skipped_steps, 1);
  const auto lines = LogLines(run.run_dir, "\"bad_step\"");  // one per rank's log
  ASSERT_FALSE(lines.empty());
  for (const std::string& line : lines) EXPECT_NE(line.find("z-score"), std::string::npos) << line;
}

}  // namespace
}  // namespace nats
