// MFU against a fixed peak (runtime/peak_flops.h): train.peak_gflops and `nats bench peak`'s file give the
// peak; without one the run reports no MFU (null) and says how to get one. The metrics' mfu is checked
// against its definition, tokens/s x Transformer::FlopsPerToken / (peak x world).
#include <cblas.h>  // openblas_get_num_threads
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "data/cache_dir.h"
#include "nats/transformer.h"
#include "runtime/config.h"
#include "runtime/inference_model.h"
#include "runtime/peak_flops.h"
#include "runtime/trainer.h"

namespace nats {
namespace {

namespace fs = std::filesystem;

// The peak and the trainer's speed are only comparable when both run on the threads asked for: OpenBLAS keeps
// its own pool, which at::set_num_threads does not reach, and LimitBlasThreads sets it.
TEST(ThreadSetup, LimitBlasThreadsSetsOpenBlasPool) {
  const int before = openblas_get_num_threads();
  LimitBlasThreads(1);
  EXPECT_EQ(openblas_get_num_threads(), 1);
  if (std::thread::hardware_concurrency() >= 2) {
    // Back up from 1, whatever an earlier test left: the pool can grow again to the machine's cores.
    LimitBlasThreads(2);
    EXPECT_EQ(openblas_get_num_threads(), 2);
  }
  LimitBlasThreads(before);
}

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

// A tiny dense model, 4 steps, every step logged, one thread, in a fresh run directory.
config::Config TinyConfig(const fs::path& run_dir, const std::vector<std::string>& extra) {
  const std::string source = Env("NATS_SOURCE_DIR", ".");
  const std::string data = Env("NATS_DATA_DIR", "data");
  auto cfg = LoadConfigFile(source + "/configs/tiny.textproto");
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  fs::remove_all(run_dir);
  std::vector<std::string> overrides = {"data.train_path=" + data + "/books/train.tok",
                                        "data.val_path=" + data + "/books/val.tok",
                                        "model.n_layer=1",
                                        "model.d_model=32",
                                        "model.n_head=2",
                                        "model.context_length=32",
                                        "train.steps=4",
                                        "train.log_interval=1",
                                        "train.eval_interval=0",
                                        "train.eval_windows=1",
                                        "train.threads=1",
                                        "train.run_dir=" + run_dir.string()};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  for (const std::string& s : overrides) EXPECT_TRUE(ApplyOverride(s, &*cfg).ok()) << s;
  return *cfg;
}

std::vector<nlohmann::json> TrainLines(const fs::path& run_dir) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(run_dir / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j["kind"] == "train") lines.push_back(j);
  }
  return lines;
}

// NATS_CACHE pointed at an empty directory for one test, so that a peak.json of this machine cannot leak in.
class EmptyCache {
 public:
  explicit EmptyCache(const fs::path& dir) : dir_(dir) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const char* old = std::getenv("NATS_CACHE");
    had_old_ = old != nullptr;
    if (had_old_) old_ = old;
    setenv("NATS_CACHE", dir_.c_str(), 1);
  }
  ~EmptyCache() {
    if (had_old_) {
      setenv("NATS_CACHE", old_.c_str(), 1);
    } else {
      unsetenv("NATS_CACHE");
    }
    fs::remove_all(dir_);
  }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
  bool had_old_ = false;
  std::string old_;
};

TEST(Mfu, ConfiguredPeakGivesTheDefinedMfu) {
  const fs::path run_dir = fs::temp_directory_path() / "nats_mfu_configured";
  const config::Config cfg = TinyConfig(run_dir, {"train.peak_gflops=7.5"});
  const double flops_per_token = Transformer(ModelSpecFromConfig(cfg))->FlopsPerToken();
  testing::internal::CaptureStdout();
  auto trainer = Trainer::Create(cfg);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto summary = (*trainer)->Train();
  const std::string out = testing::internal::GetCapturedStdout();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_NE(out.find("MFU peak: 7.5 GFLOP/s per rank x 1 rank(s) = 7.5 GFLOP/s (train.peak_gflops)"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("no peak known"), std::string::npos) << out;
  const auto lines = TrainLines(run_dir);
  ASSERT_EQ(lines.size(), 4u);
  for (const nlohmann::json& j : lines) {
    ASSERT_TRUE(j["mfu"].is_number()) << j.dump();
    const double want = j["tokens_per_s"].get<double>() * flops_per_token / (7.5e9 * 1);
    EXPECT_NEAR(j["mfu"].get<double>(), want, 1e-6 * want) << j.dump();
    // Executed FLOPs: the 6N part plus what the attention kernels counted, or the dense-equivalent count
    // when they counted nothing.
    ASSERT_TRUE(j["mfu_executed"].is_number()) << j.dump();
    ASSERT_TRUE(j["flops_executed"].is_number()) << j.dump();
    EXPECT_GT(j["flops_executed"].get<double>(), 0) << j.dump();
    const double tokens_per_step = 4.0 * 32;
    EXPECT_NEAR(j["mfu_executed"].get<double>(),
                j["tokens_per_s"].get<double>() * j["flops_executed"].get<double>() / tokens_per_step / 7.5e9,
                1e-6 * want)
        << j.dump();
  }
}

TEST(Mfu, NoPeakMeansNoMfuAndAHint) {
  // data.data_dir: the GPT-2 vocabulary stays in the real cache.
  const std::string vocabulary_dir = data::DefaultCacheDir();
  EmptyCache cache(fs::temp_directory_path() / "nats_mfu_empty_cache");
  const fs::path run_dir = fs::temp_directory_path() / "nats_mfu_none";
  const config::Config cfg = TinyConfig(run_dir, {"data.data_dir=" + vocabulary_dir});
  testing::internal::CaptureStdout();
  auto trainer = Trainer::Create(cfg);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto summary = (*trainer)->Train();
  const std::string out = testing::internal::GetCapturedStdout();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_NE(out.find("MFU: no peak known for this machine; run `nats bench peak` once (or set "
                     "train.peak_gflops)"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("| MFU"), std::string::npos) << out;  // the progress line leaves MFU out
  const auto lines = TrainLines(run_dir);
  ASSERT_EQ(lines.size(), 4u);
  for (const nlohmann::json& j : lines) {
    EXPECT_TRUE(j.contains("mfu") && j["mfu"].is_null()) << j.dump();
    EXPECT_TRUE(j["mfu_executed"].is_null()) << j.dump();
    EXPECT_GT(j["flops_executed"].get<double>(), 0) << j.dump();
  }
}

TEST(Mfu, PeakFileIsUsedOnlyForThisCpuAndThreadCount) {
  EmptyCache cache(fs::temp_directory_path() / "nats_mfu_peak_file");
  const std::string path = (cache.dir() / "peak.json").string();
  EXPECT_EQ(DefaultPeakPath(), path);
  PeakRecord record;
  record.gflops = 42;
  record.threads = 3;
  record.cpu_model = CpuModelName();
  record.date = "2026-01-02T03:04:05Z";
  ASSERT_TRUE(WritePeakFile(record, path).ok());

  RunPeak peak = ResolveRunPeak(0, 3, path);
  EXPECT_EQ(peak.gflops, 42);
  EXPECT_NE(peak.source.find(path), std::string::npos) << peak.source;
  EXPECT_TRUE(peak.notes.empty());

  peak = ResolveRunPeak(5, 3, path);  // train.peak_gflops wins
  EXPECT_EQ(peak.gflops, 5);
  EXPECT_EQ(peak.source, "train.peak_gflops");

  peak = ResolveRunPeak(0, 2, path);  // another thread count
  EXPECT_EQ(peak.gflops, 0);
  ASSERT_EQ(peak.notes.size(), 1u);
  EXPECT_NE(peak.notes[0].find("--threads 2"), std::string::npos) << peak.notes[0];

  record.cpu_model = "Some Other CPU";
  ASSERT_TRUE(WritePeakFile(record, path).ok());
  peak = ResolveRunPeak(0, 3, path);
  EXPECT_EQ(peak.gflops, 0);
  ASSERT_EQ(peak.notes.size(), 1u);
  EXPECT_NE(peak.notes[0].find("Some Other CPU"), std::string::npos) << peak.notes[0];

  std::ofstream(path) << "not json";
  peak = ResolveRunPeak(0, 3, path);
  EXPECT_EQ(peak.gflops, 0);
  EXPECT_EQ(peak.notes.size(), 1u);

  fs::remove(path);
  peak = ResolveRunPeak(0, 3, path);  // no file: no peak, nothing to warn about
  EXPECT_EQ(peak.gflops, 0);
  EXPECT_TRUE(peak.notes.empty());
}

TEST(Mfu, MeasureMatmulCountsTwoFlopsPerMultiplyAdd) {
  const MatmulTiming t = MeasureMatmul(64, 0.01);
  EXPECT_EQ(t.size, 64);
  EXPECT_GE(t.reps, 1);
  EXPECT_NEAR(t.gflops, 2.0 * 64 * 64 * 64 * t.reps / t.seconds / 1e9, 1e-9 * t.gflops);
}

}  // namespace
}  // namespace nats
