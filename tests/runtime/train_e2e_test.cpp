// End to end: the tiny config trains on the demo books and lowers validation loss by a stated margin.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "runtime/config.h"
#include "runtime/trainer.h"

namespace nats {
namespace {

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

TEST(TrainEndToEnd, TinyConfigLowersValidationLossOnBooks) {
  const std::string source = Env("NATS_SOURCE_DIR", ".");
  const std::string data = Env("NATS_DATA_DIR", "data");
  ASSERT_TRUE(std::filesystem::exists(data + "/books/train.tok"))
      << data << "/books/train.tok is missing: run launch/fetch_corpus.sh, launch/fetch_tokenizer.sh and "
      << "`nats prepare` (launch/run_tests.sh does all three)";
  auto cfg = LoadConfigFile(source + "/configs/tiny.textproto");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  // A fresh run: `nats train` refuses a run directory that holds an earlier run (runtime/run_directory.h).
  std::filesystem::remove_all(std::filesystem::temp_directory_path() / "nats_e2e_tiny");
  for (const std::string& s :
       {"data.train_path=" + data + "/books/train.tok", "data.val_path=" + data + "/books/val.tok",
        std::string("train.steps=150"), std::string("train.eval_interval=0"),
        std::string("train.eval_windows=16"), std::string("train.log_interval=50"),
        "train.run_dir=" + (std::filesystem::temp_directory_path() / "nats_e2e_tiny").string()}) {
    ASSERT_TRUE(ApplyOverride(s, &*cfg).ok()) << s;
  }
  auto trainer = Trainer::Create(*cfg);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto summary = (*trainer)->Train();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->steps, 150);
  // An untrained model sits at ln(50304) = 10.8 nats; 150 steps of the tiny model reach ~6.7 on the held-out
  // books (Tom Sawyer, Opticks). Require a drop of at least 3 nats (perplexity / 20).
  EXPECT_GT(summary->first_val_loss, 10.0);
  EXPECT_LT(summary->last_val_loss, summary->first_val_loss - 3.0);
  EXPECT_GT(summary->last_val_bpb, 0.0);
}

TEST(TrainEndToEnd, MissingShardIsAClearError) {
  config::Config cfg;
  ASSERT_TRUE(ApplyOverride("data.train_path=/nonexistent/train.tok", &cfg).ok());
  ASSERT_TRUE(ApplyOverride("train.run_dir=/tmp/nats_e2e_missing", &cfg).ok());
  auto trainer = Trainer::Create(cfg);
  ASSERT_FALSE(trainer.ok());
  EXPECT_NE(trainer.status().message().find("/nonexistent/train.tok"), std::string::npos) << trainer.status();
}

}  // namespace
}  // namespace nats
