// scaling/results_table.h on cell files written here: a finished NAtS cell's type statistics are the mean
// over layers and over the train records of the last 10% of steps, each step once (a resumed run logs some
// twice); executed FLOPs use the measured mask density; a summary from another config or horizon is not "ok";
// a failed attempt is "failed"; pending cells have empty result columns; the CSV and JSONL agree.
#include "scaling/results_table.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "runtime/config.h"
#include "scaling/flop_count.h"
#include "scaling/sweep_plan.h"

namespace nats::scaling {
namespace {
namespace fs = std::filesystem;

std::map<std::string, std::map<std::string, std::string>> ReadCsv(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  const std::vector<std::string> header = absl::StrSplit(line, ',');
  std::map<std::string, std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    const std::vector<std::string> fields = absl::StrSplit(line, ',');
    EXPECT_EQ(fields.size(), header.size()) << line;
    std::map<std::string, std::string> row;
    for (size_t i = 0; i < header.size() && i < fields.size(); ++i) row[header[i]] = fields[i];
    rows[row["cell"]] = row;
  }
  return rows;
}

void WriteSummary(const SweepCell& cell, int64_t steps, const std::string& hash, double loss) {
  nlohmann::json json = {{"finished", true},
                         {"steps", steps},
                         {"config_hash", hash},
                         {"val_loss", loss},
                         {"best_val_loss", loss - 0.01},
                         {"val_bpb", loss / 0.69},
                         {"tokens_per_s", 1000.0}};
  std::ofstream(fs::path(cell.config.train().run_dir()) / "summary.json") << json.dump();
}

TEST(ResultsTable, RowsFromTheCellsFiles) {
  const fs::path dir = fs::temp_directory_path() / ("results_table_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "base.textproto") << "model { vocab_size: 320 n_layer: 2 n_head: 2 d_model: 32 "
                                           "context_length: 16 }\ntrain { batch_size: 2 }\n";
  std::ofstream(dir / "grid.textproto")
      << "base_config: \"base.textproto\"\n"
         "axis { points { name: \"dense\" } points { name: \"nats\" set: \"model.attention=NATS\" } }\n"
         "steps: [100, 200]\n";
  absl::StatusOr<SweepPlan> plan = PlanSweep((dir / "grid.textproto").string(), (dir / "out").string());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->cells.size(), 4u);  // dense_S100, nats_S100, dense_S200, nats_S200
  const SweepCell& dense = plan->cells[0];
  const SweepCell& nats = plan->cells[1];
  const SweepCell& stale = plan->cells[2];
  const SweepCell& failed = plan->cells[3];
  for (const SweepCell& c : plan->cells) fs::create_directories(c.config.train().run_dir());
  auto hash = [](const SweepCell& c) { return absl::StrFormat("%016x", ConfigHash(c.config)); };

  WriteSummary(dense, 100, hash(dense), 2.5);
  WriteSummary(nats, 100, hash(nats), 2.25);
  // Train records of the NAtS cell: two layers; steps 80..100 logged every 10, and step 100 twice (a resume
  // replays it with the same values). Only steps > 90 (the last 10%) count: 100 alone, once.
  {
    std::ofstream log(fs::path(nats.config.train().run_dir()) / "metrics.jsonl");
    auto rec = [&](int step, double kv, double density) {
      nlohmann::json r = {{"kind", "train"},
                          {"step", step},
                          {"kv_fraction", {kv, kv + 0.2}},
                          {"frac_global", {0.1, 0.3}},
                          {"frac_local", {0.2, 0.2}},
                          {"frac_sliding", {0.7, 0.5}},
                          {"mask_density", {density, density}}};
      log << r.dump() << "\n";
    };
    rec(80, 0.9, 0.9);
    rec(90, 0.8, 0.8);
    rec(100, 0.3, 0.4);
    log << "{\"kind\":\"eval\",\"step\":100,\"val_loss\":2.25}\nnot json\n[1,2]\nnull\n";
    rec(100, 0.3, 0.4);
  }
  WriteSummary(stale, 100, hash(stale), 2.0);  // from a 100-step horizon: not this 200-step cell's
  RecordAttempt(failed, 3.0, 1);
  RecordAttempt(dense, 2.0, 0);
  RecordAttempt(dense, 5.0, 0);

  ASSERT_TRUE(WriteResults(*plan).ok());
  auto rows = ReadCsv(plan->out_dir + "/results.csv");
  ASSERT_EQ(rows.size(), 4u);
  auto& d = rows[dense.name];
  EXPECT_EQ(d["status"], "ok");
  EXPECT_EQ(d["variant"], "dense");
  EXPECT_DOUBLE_EQ(std::stod(d["loss"]), 2.5);
  EXPECT_DOUBLE_EQ(std::stod(d["best_val_loss"]), 2.49);
  EXPECT_EQ(d["kv_fraction"], "1");
  EXPECT_EQ(d["frac_global"], "");
  EXPECT_DOUBLE_EQ(std::stod(d["wall_s"]), 7.0);
  EXPECT_EQ(d["flops"], d["flops_executed"]);

  auto& n = rows[nats.name];
  EXPECT_EQ(n["status"], "ok");
  EXPECT_EQ(n["attention"], "NATS");
  EXPECT_DOUBLE_EQ(std::stod(n["kv_fraction"]), 0.4);  // mean of {0.3, 0.5}, step 100 only
  EXPECT_DOUBLE_EQ(std::stod(n["frac_global"]), 0.2);
  EXPECT_DOUBLE_EQ(std::stod(n["frac_sliding"]), 0.6);
  EXPECT_DOUBLE_EQ(std::stod(n["mask_density"]), 0.4);
  EXPECT_DOUBLE_EQ(std::stod(n["flops_executed"]), TrainingFlopsPerToken(nats.config, 0.4) * nats.tokens);
  EXPECT_LT(std::stod(n["flops_executed"]), std::stod(n["flops"]));
  EXPECT_EQ(std::stoll(n["params"]), CountParameters(nats.config).non_embedding);

  EXPECT_EQ(rows[stale.name]["status"], "pending");
  EXPECT_EQ(rows[stale.name]["loss"], "");
  EXPECT_EQ(rows[failed.name]["status"], "failed");

  // JSONL: the same cells, numbers as numbers, empty values as null.
  std::ifstream jsonl(plan->out_dir + "/results.jsonl");
  int count = 0;
  for (std::string line; std::getline(jsonl, line); ++count) {
    const nlohmann::json row = nlohmann::json::parse(line);
    auto& csv = rows[row["cell"].get<std::string>()];
    if (csv["loss"].empty()) {
      EXPECT_TRUE(row["loss"].is_null());
    } else {
      EXPECT_DOUBLE_EQ(row["loss"].get<double>(), std::stod(csv["loss"]));
    }
  }
  EXPECT_EQ(count, 4);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace nats::scaling
