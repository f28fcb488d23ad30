#include "scaling/results_table.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoints/durable_file.h"
#include "runtime/config.h"

namespace nats::scaling {
namespace fs = std::filesystem;
namespace {

std::optional<nlohmann::json> ReadJsonFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return std::nullopt;
  return json;
}

// The mean of the array rec[key] (one value per NAtS layer); 0 when absent.
double Mean(const nlohmann::json& rec, const char* key) {
  const auto it = rec.find(key);
  if (it == rec.end()) return 0;
  const nlohmann::json& array = *it;
  if (!array.is_array() || array.empty()) return 0;
  double sum = 0;
  for (const auto& v : array) sum += v.is_number() ? v.get<double>() : 0.0;
  return sum / array.size();
}

std::string Number(double v) { return absl::StrFormat("%.17g", v); }

// RFC 4180: quote a field with a comma, quote or line break.
std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

CellResult ReadCellSummary(const SweepCell& cell) {
  CellResult r;
  const fs::path dir = cell.config.train().run_dir();
  if (auto record = ReadJsonFile(dir / "sweep_cell.json")) {
    r.wall_s = record->value("wall_s", 0.0);
    if (record->value("last_exit_code", 0) != 0) r.status = "failed";
  }
  auto summary = ReadJsonFile(dir / "summary.json");
  const std::string want_hash = ConfigHashText(cell.config);
  if (summary && summary->value("finished", false) && summary->value("steps", int64_t{-1}) == cell.steps &&
      summary->value("config_hash", std::string()) == want_hash) {
    r.finished = true;
    r.status = "ok";
    r.final_val_loss = summary->value("val_loss", 0.0);
    r.best_val_loss = summary->value("best_val_loss", 0.0);
    r.val_bpb = summary->value("val_bpb", 0.0);
    r.tokens_per_s = summary->value("tokens_per_s", 0.0);
  }
  return r;
}

CellResult ReadCellResult(const SweepCell& cell) {
  CellResult r = ReadCellSummary(cell);
  if (!r.finished || cell.config.model().attention() != config::ModelConfig::NATS) return r;
  const fs::path dir = cell.config.train().run_dir();
  // NAtS statistics of the last 10% of steps; a resumed run logs some steps twice (the killed attempt's and
  // the replay's, equal): keep one record per step.
  std::map<int64_t, nlohmann::json> by_step;
  std::ifstream in(dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    nlohmann::json rec = nlohmann::json::parse(line, nullptr, false);
    if (rec.is_discarded() || !rec.is_object() || rec.value("kind", "") != "train" ||
        !rec.contains("kv_fraction")) {
      continue;
    }
    const int64_t step = rec.value("step", int64_t{0});
    by_step[step] = std::move(rec);
  }
  const int64_t from = cell.steps - std::max<int64_t>(1, cell.steps / 10);
  double n = 0, kv = 0, g = 0, l = 0, sl = 0, density = 0;
  for (const auto& [step, rec] : by_step) {
    if (step <= from) continue;
    n += 1;
    kv += Mean(rec, "kv_fraction");
    g += Mean(rec, "frac_global");
    l += Mean(rec, "frac_local");
    sl += Mean(rec, "frac_sliding");
    density += Mean(rec, "mask_density");
  }
  if (n == 0 && !by_step.empty()) {  // fewer log lines than steps/10: the last one
    const nlohmann::json& rec = by_step.rbegin()->second;
    n = 1;
    kv = Mean(rec, "kv_fraction");
    g = Mean(rec, "frac_global");
    l = Mean(rec, "frac_local");
    sl = Mean(rec, "frac_sliding");
    density = Mean(rec, "mask_density");
  }
  if (n > 0) {
    r.has_nats_stats = true;
    r.kv_fraction = kv / n;
    r.frac_global = g / n;
    r.frac_local = l / n;
    r.frac_sliding = sl / n;
    r.mask_density = density / n;
  }
  return r;
}

std::string CellVariant(const SweepCell& cell) {
  for (const auto& [column, value] : cell.labels) {
    if (column == "variant") return value;
  }
  if (cell.config.model().attention() != config::ModelConfig::NATS) return "dense";
  return absl::StrCat("nats_l", ShortNumber(cell.config.nats().lambda()));
}

absl::Status WriteResults(const SweepPlan& plan) {
  std::vector<std::string> columns = {"cell",
                                      "status",
                                      "variant",
                                      "attention",
                                      "depth",
                                      "n_layer",
                                      "d_model",
                                      "n_head",
                                      "nats_lambda",
                                      "nats_window",
                                      "seed",
                                      "budget_flops",
                                      "steps",
                                      "tokens",
                                      "params",
                                      "params_total",
                                      "params_non_embedding",
                                      "params_embedding",
                                      "flops_per_token",
                                      "flops",
                                      "flops_executed",
                                      "loss",
                                      "final_val_loss",
                                      "best_val_loss",
                                      "val_bpb",
                                      "kv_fraction",
                                      "frac_global",
                                      "frac_local",
                                      "frac_sliding",
                                      "mask_density",
                                      "tokens_per_s",
                                      "wall_s",
                                      "config_hash",
                                      "run_dir"};
  for (const std::string& label : plan.label_columns) {
    if (label != "variant") columns.push_back(label);
  }
  std::string csv = absl::StrCat(absl::StrJoin(columns, ","), "\n");
  std::string jsonl;
  for (const SweepCell& cell : plan.cells) {
    const CellResult r = ReadCellResult(cell);
    const config::Config& c = cell.config;
    const bool nats = c.model().attention() == config::ModelConfig::NATS;
    std::map<std::string, std::string> v;
    nlohmann::json row;
    auto put = [&](const std::string& key, const std::string& text, nlohmann::json value) {
      v[key] = text;
      row[key] = text.empty() ? nlohmann::json() : std::move(value);
    };
    auto put_number = [&](const std::string& key, double x) { put(key, Number(x), x); };
    auto put_int = [&](const std::string& key, int64_t x) { put(key, absl::StrCat(x), x); };
    put("cell", cell.name, cell.name);
    put("status", r.status, r.status);
    put("variant", CellVariant(cell), CellVariant(cell));
    put("attention", nats ? "NATS" : "DENSE", nats ? "NATS" : "DENSE");
    put_int("depth", cell.depth);
    put_int("n_layer", c.model().n_layer());
    put_int("d_model", c.model().d_model());
    put_int("n_head", c.model().n_head());
    if (nats) {
      put_number("nats_lambda", c.nats().lambda());
      put_int("nats_window", c.nats().window());
    } else {
      put("nats_lambda", "", nullptr);
      put("nats_window", "", nullptr);
    }
    put_int("seed", static_cast<int64_t>(c.train().seed()));
    if (cell.budget_flops > 0)
      put_number("budget_flops", cell.budget_flops);
    else
      put("budget_flops", "", nullptr);
    put_int("steps", cell.steps);
    put_int("tokens", cell.tokens);
    put_int("params", cell.params.non_embedding);
    put_int("params_total", cell.params.total);
    put_int("params_non_embedding", cell.params.non_embedding);
    put_int("params_embedding", cell.params.embedding);
    put_number("flops_per_token", cell.flops_per_token);
    put_number("flops", cell.flops);
    const bool ok = r.status == "ok";
    const double density = nats && r.has_nats_stats ? r.mask_density : 1.0;
    if (ok) {
      put_number("flops_executed", TrainingFlopsPerToken(c, density) * static_cast<double>(cell.tokens));
      put_number("loss", r.final_val_loss);
      put_number("final_val_loss", r.final_val_loss);
      put_number("best_val_loss", r.best_val_loss);
      put_number("val_bpb", r.val_bpb);
      put_number("kv_fraction", nats && r.has_nats_stats ? r.kv_fraction : 1.0);
      if (nats && r.has_nats_stats) {
        put_number("frac_global", r.frac_global);
        put_number("frac_local", r.frac_local);
        put_number("frac_sliding", r.frac_sliding);
      } else {
        for (const char* k : {"frac_global", "frac_local", "frac_sliding"}) put(k, "", nullptr);
      }
      put_number("mask_density", density);
      put_number("tokens_per_s", r.tokens_per_s);
    } else {
      for (const char* k :
           {"flops_executed", "loss", "final_val_loss", "best_val_loss", "val_bpb", "kv_fraction",
            "frac_global", "frac_local", "frac_sliding", "mask_density", "tokens_per_s"}) {
        put(k, "", nullptr);
      }
    }
    if (r.wall_s > 0)
      put_number("wall_s", r.wall_s);
    else
      put("wall_s", "", nullptr);
    const std::string hash = ConfigHashText(c);
    put("config_hash", hash, hash);
    put("run_dir", c.train().run_dir(), c.train().run_dir());
    for (const auto& [column, value] : cell.labels) {
      if (column != "variant") put(column, value, value);
    }
    std::vector<std::string> fields;
    for (const std::string& col : columns) fields.push_back(CsvField(v[col]));
    absl::StrAppend(&csv, absl::StrJoin(fields, ","), "\n");
    absl::StrAppend(&jsonl, row.dump(), "\n");
  }
  std::error_code ec;
  fs::create_directories(plan.out_dir, ec);
  if (absl::Status s = checkpoint::WriteFileDurably(plan.out_dir + "/results.csv", csv, "results_csv");
      !s.ok()) {
    return s;
  }
  return checkpoint::WriteFileDurably(plan.out_dir + "/results.jsonl", jsonl, "results_jsonl");
}

void RecordAttempt(const SweepCell& cell, double seconds, int exit_code) {
  const fs::path path = fs::path(cell.config.train().run_dir()) / "sweep_cell.json";
  nlohmann::json record = ReadJsonFile(path).value_or(nlohmann::json::object());
  record["wall_s"] = record.value("wall_s", 0.0) + seconds;
  record["attempts"] = record.value("attempts", 0) + 1;
  record["last_exit_code"] = exit_code;
  record["cell"] = cell.name;
  (void)checkpoint::WriteFileDurably(path.string(), record.dump(2) + "\n", "sweep_cell");
}

}  // namespace nats::scaling
