// Exact resume on one rank: N steps straight == N/2 steps + checkpoint + resume + N/2 steps, bit for bit
// (losses and parameters), for a NAtS model (its Gumbel sampling makes the RNG state part of the run).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "checkpoints/checkpoint_dir.h"
#include "runtime/config.h"
#include "runtime/trainer.h"

namespace nats {
namespace {

namespace fs = std::filesystem;

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

config::Config TinyNatsConfig(const std::string& run_dir) {
  const std::string source = Env("NATS_SOURCE_DIR", "."), data = Env("NATS_DATA_DIR", "data");
  auto cfg = LoadConfigFile(source + "/configs/tiny_nats.textproto");
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  for (const std::string& s : {"data.train_path=" + data + "/books/train.tok",
                               "data.val_path=" + data + "/books/val.tok", std::string("train.steps=12"),
                               std::string("train.eval_interval=0"), std::string("train.eval_windows=2"),
                               std::string("train.log_interval=1"), std::string("train.threads=1"),
                               std::string("model.n_layer=1"), std::string("checkpoint.interval_steps=6"),
                               std::string("checkpoint.keep_last=0"), "train.run_dir=" + run_dir}) {
    EXPECT_TRUE(ApplyOverride(s, &*cfg).ok()) << s;
  }
  return *cfg;
}

// step -> loss, from metrics.jsonl (appended by resumed runs too).
std::map<int, std::string> Losses(const std::string& run_dir) {
  std::map<int, std::string> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    if (line.find("\"kind\":\"train\"") == std::string::npos) continue;
    const size_t s = line.find("\"step\":"), l = line.find("\"loss\":");
    const int step = std::atoi(line.c_str() + s + 7);
    out[step] =
        line.substr(l + 7, line.find(',', l) - l - 7);  // the printed value, compared as text: bit-exact
  }
  return out;
}

TEST(Resume, HalfThenResumeEqualsStraightRunBitForBit) {
  ASSERT_TRUE(fs::exists(Env("NATS_DATA_DIR", "data") + "/books/train.tok")) << "run launch/run_tests.sh";
  const fs::path root = fs::temp_directory_path() / "nats_resume_test";
  fs::remove_all(root);
  const std::string straight = (root / "straight").string(), split = (root / "split").string();

  auto a = Trainer::Create(TinyNatsConfig(straight));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE((*a)->Train().ok());

  {
    auto b = Trainer::Create(TinyNatsConfig(split));
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_TRUE((*b)->Train().ok());
  }
  // Forget everything after step 6, as if the job had been killed right after that checkpoint.
  fs::remove_all(fs::path(split) / "ckpt" / "step_00000012");
  fs::remove(fs::path(split) / "ckpt" / "latest");
  TrainOptions resume;
  resume.resume = true;
  auto c = Trainer::Create(TinyNatsConfig(split), resume);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->step(), 6);
  auto summary = (*c)->Train();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->resumed_from_step, 6);
  EXPECT_EQ((*c)->step(), 12);

  auto pa = (*a)->NamedParameters(), pc = (*c)->NamedParameters();
  ASSERT_EQ(pa.size(), pc.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::equal(pa[i].second, pc[i].second)) << pa[i].first << " differs after resume";
  }
  const auto la = Losses(straight), lc = Losses(split);
  ASSERT_EQ(la.size(), 12u);
  for (int step = 1; step <= 12; ++step) {
    ASSERT_TRUE(lc.count(step)) << "step " << step;
    EXPECT_EQ(la.at(step), lc.at(step)) << "loss at step " << step;
  }
}

// A fast dense model for the run-directory tests (d 32, T 32, one layer): seconds per run.
config::Config SmallConfig(const std::string& run_dir, int steps) {
  const std::string source = Env("NATS_SOURCE_DIR", "."), data = Env("NATS_DATA_DIR", "data");
  auto cfg = LoadConfigFile(source + "/configs/tiny.textproto");
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  for (const std::string& s :
       {"data.train_path=" + data + "/books/train.tok", "data.val_path=" + data + "/books/val.tok",
        "train.steps=" + std::to_string(steps), std::string("train.eval_interval=0"),
        std::string("train.eval_windows=2"), std::string("train.log_interval=1"),
        std::string("train.threads=1"), std::string("model.n_layer=1"), std::string("model.d_model=32"),
        std::string("model.n_head=2"), std::string("model.context_length=32"),
        std::string("checkpoint.interval_steps=2"), std::string("checkpoint.keep_last=0"),
        "train.run_dir=" + run_dir}) {
    EXPECT_TRUE(ApplyOverride(s, &*cfg).ok()) << s;
  }
  return *cfg;
}

absl::Status TrainRun(const config::Config& cfg, const TrainOptions& options = {}, int64_t* step = nullptr) {
  auto t = Trainer::Create(cfg, options);
  if (!t.ok()) return t.status();
  if (step) *step = (*t)->step();
  return (*t)->Train().status();
}

TrainOptions Resume(std::string from = "") {
  TrainOptions o;
  o.resume = true;
  o.resume_from = std::move(from);
  return o;
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Every file under `dir` with its content: a refused start must leave this unchanged.
std::map<std::string, std::string> Snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    out[e.path().string()] = e.is_regular_file() ? ReadAll(e.path()) : "<dir>";
  }
  return out;
}

class RunDirectory : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(Env("NATS_DATA_DIR", "data") + "/books/train.tok")) << "run launch/run_tests.sh";
    dir_ = fs::temp_directory_path() /
           ("nats_run_dir_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(RunDirectory, FreshRunNeverDestroysARun) {
  const config::Config cfg = SmallConfig(dir_.string(), 4);
  ASSERT_TRUE(TrainRun(cfg).ok());
  const auto before = Snapshot(dir_);
  absl::Status again = TrainRun(cfg);
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  for (const std::string part : {"holds a run (checkpoints up to step 4", "--resume", "--overwrite"}) {
    EXPECT_NE(again.message().find(part), std::string::npos) << part << " in: " << again;
  }
  EXPECT_NE(again.message().find(dir_.string()), std::string::npos) << again;
  EXPECT_EQ(Snapshot(dir_), before) << "a refused start changed the run directory";

  // A metrics log alone (no checkpoint yet) is a run too.
  fs::remove_all(dir_ / "ckpt");
  EXPECT_NE(TrainRun(cfg).message().find("no checkpoint, but"), std::string::npos);

  // --overwrite: checkpoints deleted, old metrics and config moved aside (not truncated), then a fresh run.
  const std::string old_metrics = ReadAll(dir_ / "metrics.jsonl");
  TrainOptions overwrite;
  overwrite.overwrite = true;
  ASSERT_TRUE(TrainRun(SmallConfig(dir_.string(), 2), overwrite).ok());
  std::vector<fs::path> aside;
  for (const auto& e : fs::directory_iterator(dir_)) {
    if (e.path().filename().string().rfind("overwritten_", 0) == 0) aside.push_back(e.path());
  }
  ASSERT_EQ(aside.size(), 1u);
  EXPECT_EQ(ReadAll(aside[0] / "metrics.jsonl"), old_metrics);
  EXPECT_TRUE(fs::exists(aside[0] / "config.textproto"));
  EXPECT_EQ(*checkpoint::ListCompleteSteps((dir_ / "ckpt").string()), std::vector<int64_t>{2});
  EXPECT_EQ(Losses(dir_.string()).size(), 2u);
}

TEST_F(RunDirectory, ResumeTakesTheNewestStepEvenWhenLatestIsStale) {
  ASSERT_TRUE(TrainRun(SmallConfig(dir_.string(), 4)).ok());
  // As if killed between the rename of step_4 and the pointer update.
  ASSERT_TRUE(checkpoint::WriteLatest((dir_ / "ckpt").string(), 2).ok());
  int64_t step = -1;
  ASSERT_TRUE(TrainRun(SmallConfig(dir_.string(), 6), Resume(), &step).ok());
  EXPECT_EQ(step, 4);
  // The log is appended to: the first run's four steps, a resume line, steps 5 and 6.
  const std::string log = ReadAll(dir_ / "metrics.jsonl");
  EXPECT_NE(log.find("{\"kind\":\"resume\",\"rank\":0,\"step\":4,"), std::string::npos) << log;
  EXPECT_EQ(Losses(dir_.string()).size(), 6u);
}

TEST_F(RunDirectory, ResumeFromAnOlderStepRollsBack) {
  ASSERT_TRUE(TrainRun(SmallConfig(dir_.string(), 6)).ok());
  const std::string root = (dir_ / "ckpt").string();
  int64_t step = -1;
  ASSERT_TRUE(TrainRun(SmallConfig(dir_.string(), 4), Resume("2"), &step).ok());
  EXPECT_EQ(step, 2);
  // The abandoned timeline is kept under another name; the new one continues from step 2.
  EXPECT_EQ(*checkpoint::ListCompleteSteps(root), (std::vector<int64_t>{2, 4}));
  EXPECT_TRUE(fs::exists(root + "/step_00000006.abandoned/manifest.pb"));
  ASSERT_TRUE(TrainRun(SmallConfig(dir_.string(), 4), Resume(), &step).ok());
  EXPECT_EQ(step, 4);
  // A step directory by path works too; a missing step is named with the ones there are.
  ASSERT_TRUE(TrainRun(SmallConfig(dir_.string(), 4), Resume(root + "/step_00000004"), &step).ok());
  EXPECT_EQ(step, 4);
  absl::Status missing = TrainRun(SmallConfig(dir_.string(), 4), Resume("3"));
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("complete steps under " + root + ": 2, 4"), std::string::npos) << missing;
}

TEST_F(RunDirectory, ResumeRefusesSilentConfigChangesAndLogsTheOthers) {
  ASSERT_TRUE(TrainRun(SmallConfig(dir_.string(), 2)).ok());
  const auto before = Snapshot(dir_);
  auto refused = [&](const std::vector<std::string>& sets, bool allow) {
    config::Config cfg = SmallConfig(dir_.string(), 4);
    for (const std::string& s : sets) EXPECT_TRUE(ApplyOverride(s, &cfg).ok()) << s;
    TrainOptions o = Resume();
    o.allow_config_change = allow;
    return TrainRun(cfg, o);
  };
  // Architecture, tokenizer, batch: refused even with --allow_config_change; both values and the fix named.
  for (const std::string& field : {"model.context_length=64", "model.n_head=4", "model.vocab_size=50368",
                                   "model.attention=NATS", "data.tokenizer=byte", "train.batch_size=8"}) {
    absl::Status s = refused({field}, /*allow=*/true);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    const std::string name = field.substr(0, field.find('='));
    EXPECT_NE(s.message().find(name + " was "), std::string::npos) << s;
    EXPECT_NE(s.message().find("resume with --set " + name + "="), std::string::npos) << s;
  }
  // Seed and data paths: refused unless allowed.
  absl::Status seed = refused({"train.seed=7"}, false);
  EXPECT_NE(seed.message().find("train.seed was 1337 when saved, now 7"), std::string::npos) << seed;
  EXPECT_NE(seed.message().find("--allow_config_change"), std::string::npos) << seed;
  EXPECT_EQ(Snapshot(dir_), before) << "a refused resume changed the run directory";
  // Allowed, and other changes: printed and logged as one config_change line.
  ASSERT_TRUE(refused({"train.seed=7", "optim.lr=1e-3"}, true).ok());
  const std::string log = ReadAll(dir_ / "metrics.jsonl");
  EXPECT_NE(log.find("\"kind\":\"config_change\""), std::string::npos) << log;
  EXPECT_NE(
      log.find(
          "\"fields\":[\"optim.lr\",\"train.steps\",\"train.seed\"],\"saved\":[\"0.003\",\"2\",\"1337\"],"
          "\"current\":[\"0.001\",\"4\",\"7\"]"),
      std::string::npos)
      << log;
}

TEST(Resume, ChangedModelShapeIsRefusedNamingTheField) {
  const fs::path root = fs::temp_directory_path() / "nats_resume_shape_test";
  fs::remove_all(root);
  config::Config cfg = TinyNatsConfig(root.string());
  ASSERT_TRUE(ApplyOverride("train.steps=1", &cfg).ok());
  {
    auto t = Trainer::Create(cfg);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_TRUE((*t)->Train().ok());
  }
  ASSERT_TRUE(ApplyOverride("model.d_model=64", &cfg).ok());
  TrainOptions resume;
  resume.resume = true;
  auto t = Trainer::Create(cfg, resume);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("model.d_model"), std::string::npos) << t.status();
}

}  // namespace
}  // namespace nats
