// scaling/sweep_plan.h: the grid's cells, names and settings follow the stated rules (family by depth, axes
// in order, FLOP budgets -> steps by scaling/flop_count.h, warmup cap, cells under min_steps left out), and
// bad sweep files are refused with the file and the fix in the message.
#include "scaling/sweep_plan.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "scaling/flop_count.h"

namespace nats::scaling {
namespace {
namespace fs = std::filesystem;

class SweepPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sweep_plan_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "base.textproto") << "model { vocab_size: 320 n_layer: 2 n_head: 2 d_model: 64 "
                                              "context_length: 128 }\n"
                                              "optim { lr: 4e-3 warmup_steps: 50 }\n"
                                              "train { batch_size: 4 seed: 7 }\n"
                                              "data { tokenizer: \"byte\" train_path: \"rel/train.tok\" }\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& text) {
    const fs::path path = dir_ / "grid.textproto";
    std::ofstream(path) << "base_config: \"base.textproto\"\n" << text;
    return path.string();
  }

  fs::path dir_;
};

TEST_F(SweepPlanTest, FamilyAxesAndFlopBudgetsFollowTheRules) {
  const std::string grid = Write(R"(
family { depths: [1, 2] aspect_ratio: 64 head_dim: 32 lr_base_width: 128 lr_width_exponent: 0.5 }
axis { points { name: "dense" } points { name: "nats" set: "model.attention=NATS" } }
axis { field: "nats.window" values: ["8", "16"] }
flops: [1e12, 3e12]
min_steps: 1
max_warmup_fraction: 0.1
)");
  absl::StatusOr<SweepPlan> plan = PlanSweep(grid, (dir_ / "out").string());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->cells.size(), 2u * 2 * 2 * 2);
  EXPECT_EQ(plan->label_columns, (std::vector<std::string>{"variant", "window"}));
  // Horizon outermost, then size, then the axes (last fastest).
  EXPECT_EQ(plan->cells[0].name, "L1_dense_window8_C1e12");
  EXPECT_EQ(plan->cells[1].name, "L1_dense_window16_C1e12");
  EXPECT_EQ(plan->cells[2].name, "L1_nats_window8_C1e12");
  EXPECT_EQ(plan->cells[4].name, "L2_dense_window8_C1e12");
  EXPECT_EQ(plan->cells[8].name, "L1_dense_window8_C3e12");
  for (const SweepCell& cell : plan->cells) {
    const config::Config& c = cell.config;
    EXPECT_EQ(cell.index, &cell - plan->cells.data());
    EXPECT_EQ(c.model().n_layer(), cell.depth);
    EXPECT_EQ(c.model().d_model(), 64 * cell.depth);
    EXPECT_EQ(c.model().n_head(), 64 * cell.depth / 32);
    EXPECT_DOUBLE_EQ(c.optim().lr(), 4e-3 * std::sqrt(128.0 / (64 * cell.depth)));
    EXPECT_EQ(c.model().attention() == config::ModelConfig::NATS,
              cell.name.find("_nats_") != std::string::npos);
    // steps = round(C / (FLOPs per token x tokens per step)); tokens and FLOPs follow.
    const double tokens_per_step = 4.0 * 128;
    const double per_token = TrainingFlopsPerToken(c, 1.0);
    EXPECT_DOUBLE_EQ(cell.flops_per_token, per_token);
    EXPECT_EQ(cell.steps, std::llround(cell.budget_flops / (per_token * tokens_per_step))) << cell.name;
    EXPECT_EQ(c.train().steps(), cell.steps);
    EXPECT_EQ(cell.tokens, cell.steps * 512);
    EXPECT_NEAR(cell.flops / cell.budget_flops, 1.0, 0.5 / cell.steps + 1e-12);
    EXPECT_EQ(c.optim().warmup_steps(), std::min<int64_t>(50, std::max<int64_t>(1, cell.steps / 10)));
    EXPECT_EQ(c.train().run_dir(), (fs::path(plan->out_dir) / "cells" / cell.name).string());
    EXPECT_EQ(c.train().seed(), 7u);
    EXPECT_TRUE(fs::path(c.data().train_path()).is_absolute()) << "cells may run from another directory";
    EXPECT_EQ(cell.params.non_embedding, CountParameters(c).non_embedding);
  }
}

TEST_F(SweepPlanTest, StepsTokensSeedsAndShortCells) {
  absl::StatusOr<SweepPlan> plan =
      PlanSweep(Write("tokens: [5120, 51200]\nseeds: [1, 2]\nmin_steps: 20\n"), "");
  ASSERT_TRUE(plan.ok()) << plan.status();
  // 5120 tokens = 10 steps of 512: under min_steps, left out (both seeds) and listed.
  ASSERT_EQ(plan->cells.size(), 2u);
  EXPECT_EQ(plan->left_out.size(), 2u);
  EXPECT_EQ(plan->cells[0].name, "T51200_s1");
  EXPECT_EQ(plan->cells[1].config.train().seed(), 2u);
  EXPECT_EQ(plan->cells[0].steps, 100);
  EXPECT_EQ(fs::path(plan->out_dir).filename(), "grid") << "default out: runs/sweeps/<sweep file name>";
}

TEST(ShippedSweeps, EveryFileInConfigsSweepsPlans) {
  const char* source = std::getenv("NATS_SOURCE_DIR");
  ASSERT_NE(source, nullptr) << "run under CTest (NATS_SOURCE_DIR)";
  int count = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(source) / "configs" / "sweeps")) {
    if (entry.path().extension() != ".textproto") continue;
    absl::StatusOr<SweepPlan> plan = PlanSweep(entry.path().string(), "/tmp/unused_sweep_out");
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_GE(plan->cells.size(), 4u) << entry.path();
    ++count;
  }
  EXPECT_GE(count, 2);
}

TEST_F(SweepPlanTest, ShortNumbers) {
  EXPECT_EQ(ShortNumber(16), "16");
  EXPECT_EQ(ShortNumber(3e11), "3e11");
  EXPECT_EQ(ShortNumber(1.5e12), "1.5e12");
  EXPECT_EQ(ShortNumber(1e-5), "1e-5");
  EXPECT_EQ(ShortNumber(0.5), "0.5");
}

TEST_F(SweepPlanTest, BadFilesNameTheFileAndTheFix) {
  struct Case {
    std::string text, want;
  } cases[] = {
      {"", "exactly one horizon list"},
      {"steps: [10]\nflops: [1e12]\n", "exactly one horizon list"},
      {"steps: [10]\naxis { field: \"nats.window\" values: [\"4\"] points { name: \"x\" } }\n", "not both"},
      {"steps: [30]\naxis { points { name: \"a\" } points { name: \"a\" } }\n", "two cells are named"},
      {"steps: [30]\naxis { field: \"optim.lr\" values: [\"-1\"] }\n", "optim.lr"},
      {"steps: [10]\nfamily { depths: [3] aspect_ratio: 10 head_dim: 4 }\n", "multiple of head_dim"},
      {"steps: [30]\nmin_steps: 40\n", "no cell has at least min_steps"},
      {"flops: [1e12]\nbogus: 1\n", "bogus"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<SweepPlan> plan = PlanSweep(Write(c.text), "");
    ASSERT_FALSE(plan.ok()) << c.text;
    const std::string message(plan.status().message());
    EXPECT_NE(message.find("grid.textproto"), std::string::npos) << message;
    EXPECT_NE(message.find(c.want), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace nats::scaling
