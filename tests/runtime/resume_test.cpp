// Exact resume on one rank: N steps straight == N/2 steps + checkpoint + resume + N/2 steps, bit for bit
// (losses and parameters), for a NAtS model (its Gumbel sampling makes the RNG state part of the run).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

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
  for (const std::string& s :
       {"data.train_path=" + data + "/books/train.tok", "data.val_path=" + data + "/books/val.tok",
        "data.data_dir=" + data, std::string("train.steps=12"), std::string("train.eval_interval=0"),
        std::string("train.eval_windows=2"), std::string("train.log_interval=1"), std::string("train.threads=1"),
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
    out[step] = line.substr(l + 7, line.find(',', l) - l - 7);  // the printed value, compared as text: bit-exact
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
