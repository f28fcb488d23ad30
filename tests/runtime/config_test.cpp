// Config loading, --set overrides, validation and the learning-rate schedules.
#include "runtime/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "runtime/lr_schedule.h"

namespace nats {
namespace {

std::string SourceDir() {
  const char* dir = std::getenv("NATS_SOURCE_DIR");
  return dir ? dir : ".";
}

std::string WriteTemp(const std::string& name, const std::string& text) {
  auto path = std::filesystem::temp_directory_path() / name;
  std::ofstream(path) << text;
  return path.string();
}

TEST(Config, EveryShippedConfigLoadsAndValidates) {
  int count = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(SourceDir() + "/configs")) {
    if (entry.path().extension() != ".textproto") continue;
    // configs/sweeps/ holds Sweep files (tests/scaling/sweep_plan_test.cpp plans each of them).
    if (entry.path().parent_path().filename() == "sweeps") continue;
    auto cfg = LoadConfigFile(entry.path().string());
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    EXPECT_TRUE(ValidateConfig(*cfg).ok()) << entry.path() << ": " << ValidateConfig(*cfg);
    ++count;
  }
  EXPECT_GE(count, 3);
}

TEST(Config, MissingFileNamesThePath) {
  auto cfg = LoadConfigFile("/nonexistent/dir/run.textproto");
  ASSERT_FALSE(cfg.ok());
  EXPECT_NE(cfg.status().message().find("/nonexistent/dir/run.textproto"), std::string::npos);
}

TEST(Config, UnknownFieldInFileNamesFileLineAndField) {
  const std::string path =
      WriteTemp("nats_cfg_unknown.textproto", "model {\n  n_layer: 2\n  n_layers: 3\n}\n");
  auto cfg = LoadConfigFile(path);
  ASSERT_FALSE(cfg.ok());
  const std::string msg(cfg.status().message());
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("n_layers"), std::string::npos) << msg;
}

TEST(Config, OverridesSetNumbersEnumsStringsAndLists) {
  config::Config cfg;
  ASSERT_TRUE(ApplyOverride("optim.lr=3e-4", &cfg).ok());
  ASSERT_TRUE(ApplyOverride("model.norm=RMS_NORM", &cfg).ok());
  ASSERT_TRUE(ApplyOverride("train.run_dir=runs/x y", &cfg).ok());
  ASSERT_TRUE(ApplyOverride("nats.layers=[0, 2]", &cfg).ok());
  ASSERT_TRUE(ApplyOverride("model.tie_embeddings=false", &cfg).ok());
  EXPECT_DOUBLE_EQ(cfg.optim().lr(), 3e-4);
  EXPECT_EQ(cfg.model().norm(), config::ModelConfig::RMS_NORM);
  EXPECT_EQ(cfg.train().run_dir(), "runs/x y");
  ASSERT_EQ(cfg.nats().layers_size(), 2);
  EXPECT_EQ(cfg.nats().layers(1), 2);
  EXPECT_FALSE(cfg.model().tie_embeddings());
  // A list override replaces, not appends.
  ASSERT_TRUE(ApplyOverride("nats.layers=1", &cfg).ok());
  ASSERT_EQ(cfg.nats().layers_size(), 1);
  EXPECT_EQ(cfg.nats().layers(0), 1);
  // Untouched fields keep their defaults.
  EXPECT_EQ(cfg.model().n_layer(), 12);
}

TEST(Config, BadOverridesNameTheFieldAndTheFix) {
  config::Config cfg;
  auto message = [&](const std::string& assignment) {
    absl::Status s = ApplyOverride(assignment, &cfg);
    EXPECT_FALSE(s.ok()) << assignment;
    return std::string(s.message());
  };
  EXPECT_NE(message("optim.learning_rate=1").find("learning_rate"), std::string::npos);
  EXPECT_NE(message("optim.learning_rate=1").find("known fields"), std::string::npos);
  EXPECT_NE(message("model.norm=BATCH_NORM").find("allowed: LAYER_NORM, RMS_NORM"), std::string::npos);
  EXPECT_NE(message("train.steps=many").find("train.steps"), std::string::npos);
  EXPECT_NE(message("optim=3").find("section"), std::string::npos);
  EXPECT_NE(message("optim.lr").find("section.field=value"), std::string::npos);
  EXPECT_NE(message("bogus.x=1").find("bogus"), std::string::npos);
}

TEST(Config, ValidationNamesTheField) {
  auto error_of = [](const std::string& assignment) {
    config::Config cfg;
    EXPECT_TRUE(ApplyOverride(assignment, &cfg).ok()) << assignment;
    absl::Status s = ValidateConfig(cfg);
    EXPECT_FALSE(s.ok()) << assignment;
    return std::string(s.message());
  };
  EXPECT_NE(error_of("model.n_head=5").find("model.n_head"), std::string::npos);
  EXPECT_NE(error_of("model.n_kv_head=5").find("model.n_kv_head"), std::string::npos);
  EXPECT_NE(error_of("optim.lr=-1").find("optim.lr"), std::string::npos);
  EXPECT_NE(error_of("optim.beta2=1.5").find("optim.beta"), std::string::npos);
  EXPECT_NE(error_of("train.batch_size=0").find("train.batch_size"), std::string::npos);
  EXPECT_NE(error_of("nats.layers=[12]").find("nats.layers"), std::string::npos);
  EXPECT_NE(error_of("data.tokenizer=bpe").find("data.tokenizer"), std::string::npos);
  EXPECT_NE(error_of("parallel.zero_stage=3").find("parallel.zero_stage"), std::string::npos);
  config::Config ok;
  EXPECT_TRUE(ValidateConfig(ok).ok());
  // Sequence parallelism with the retained exchange cannot form the unmasked softmax (every earlier key).
  config::Config sp;
  for (const char* a : {"parallel.sp=2", "model.attention=NATS", "nats.grad_mode=UNMASKED"}) {
    ASSERT_TRUE(ApplyOverride(a, &sp).ok()) << a;
  }
  absl::Status refused = ValidateConfig(sp);
  EXPECT_NE(refused.message().find("parallel.sp_exchange"), absl::string_view::npos) << refused;
  ASSERT_TRUE(ApplyOverride("parallel.sp_exchange=FULL", &sp).ok());
  EXPECT_TRUE(ValidateConfig(sp).ok()) << ValidateConfig(sp);
}

TEST(Config, PrintedConfigIsCompleteAndParsesBack) {
  config::Config cfg;
  ASSERT_TRUE(ApplyOverride("model.n_layer=3", &cfg).ok());
  const std::string text = ConfigToText(cfg);
  EXPECT_NE(text.find("n_layer: 3"), std::string::npos);
  EXPECT_NE(text.find("d_model: 768"), std::string::npos) << "defaults must be printed too";
  auto back = LoadConfigFile(WriteTemp("nats_cfg_back.textproto", text));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ConfigHash(*back), ConfigHash(cfg));
  ASSERT_TRUE(ApplyOverride("model.n_layer=4", &cfg).ok());
  EXPECT_NE(ConfigHash(*back), ConfigHash(cfg));
}

TEST(Config, LayerSelectionForNats) {
  config::Config cfg;
  EXPECT_FALSE(LayerUsesNats(cfg, 0));
  ASSERT_TRUE(ApplyOverride("model.attention=NATS", &cfg).ok());
  EXPECT_TRUE(LayerUsesNats(cfg, 5));
  ASSERT_TRUE(ApplyOverride("nats.layers=[1,3]", &cfg).ok());
  EXPECT_FALSE(LayerUsesNats(cfg, 0));
  EXPECT_TRUE(LayerUsesNats(cfg, 3));
}

TEST(LrSchedule, WarmupCosineConstantAndWsd) {
  config::OptimConfig o;
  o.set_lr(1.0);
  o.set_min_lr_ratio(0.1);
  o.set_warmup_steps(10);
  EXPECT_DOUBLE_EQ(LearningRateAt(o, 0, 100), 0.1);
  EXPECT_DOUBLE_EQ(LearningRateAt(o, 9, 100), 1.0);
  EXPECT_NEAR(LearningRateAt(o, 10, 100), 1.0, 1e-12);
  EXPECT_NEAR(LearningRateAt(o, 55, 100), 0.55, 1e-12);  // cosine midpoint: (1 + 0.1) / 2
  EXPECT_NEAR(LearningRateAt(o, 100, 100), 0.1, 1e-12);
  for (int s = 11; s < 100; ++s) EXPECT_LE(LearningRateAt(o, s, 100), LearningRateAt(o, s - 1, 100));

  o.set_schedule(config::OptimConfig::CONSTANT);
  EXPECT_DOUBLE_EQ(LearningRateAt(o, 80, 100), 1.0);

  o.set_schedule(config::OptimConfig::WSD);
  o.set_decay_fraction(0.2);
  EXPECT_DOUBLE_EQ(LearningRateAt(o, 79, 100), 1.0);
  EXPECT_LT(LearningRateAt(o, 85, 100), 1.0);
  EXPECT_NEAR(LearningRateAt(o, 99, 100), 0.1, 1e-12);
}

}  // namespace
}  // namespace nats
