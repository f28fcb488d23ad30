#include "runtime/peak_flops.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "data/cache_dir.h"

namespace nats {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

MatmulTiming MeasureMatmul(int64_t n, double seconds) {
  torch::NoGradGuard no_grad;
  at::Tensor a = torch::randn({n, n}), b = torch::randn({n, n});
  at::Tensor c = at::matmul(a, b);  // the first product allocates and wakes the thread pools
  const auto warm = Clock::now();
  while (SecondsSince(warm) < 0.1 * seconds) c = at::matmul(a, b);
  MatmulTiming t;
  t.size = n;
  const auto start = Clock::now();
  do {
    c = at::matmul(a, b);
    ++t.reps;
  } while (SecondsSince(start) < seconds);
  t.seconds = SecondsSince(start);
  t.gflops = 2.0 * n * n * n * t.reps / t.seconds / 1e9;
  return t;
}

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const size_t begin = line.find_first_not_of(" \t", colon + 1);
    if (begin == std::string::npos) continue;
    return line.substr(begin);
  }
  return "unknown";
}

std::string DefaultPeakPath() {
  return (std::filesystem::path(data::DefaultCacheDir()) / "peak.json").string();
}

absl::Status WritePeakFile(const PeakRecord& record, const std::string& path) {
  nlohmann::ordered_json j;
  j["gflops"] = record.gflops;
  j["threads"] = record.threads;
  j["cpu_model"] = record.cpu_model;
  j["libtorch"] = record.libtorch;
  j["date"] = record.date;
  j["timings"] = nlohmann::ordered_json::array();
  for (const MatmulTiming& t : record.timings) {
    j["timings"].push_back(
        {{"size", t.size}, {"reps", t.reps}, {"seconds", t.seconds}, {"gflops", t.gflops}});
  }
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  // Written aside and renamed, so that a trainer starting meanwhile reads the old file or the new one.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << "\n";
    if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write the peak file"));
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write the peak file: ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<PeakRecord> ReadPeakFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not JSON; re-create it with `nats bench peak`"));
  }
  PeakRecord r;
  auto gflops = j.find("gflops");
  auto threads = j.find("threads");
  if (gflops == j.end() || !gflops->is_number() || threads == j.end() || !threads->is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no numeric \"gflops\" and \"threads\"; re-create it with `nats bench peak`"));
  }
  r.gflops = gflops->get<double>();
  r.threads = threads->get<int>();
  r.cpu_model = j.value("cpu_model", "");
  r.libtorch = j.value("libtorch", "");
  r.date = j.value("date", "");
  return r;
}

RunPeak ResolveRunPeak(double config_gflops, int threads, const std::string& peak_path) {
  RunPeak peak;
  if (config_gflops > 0) {
    peak.gflops = config_gflops;
    peak.source = "train.peak_gflops";
    return peak;
  }
  auto record = ReadPeakFile(peak_path);
  if (!record.ok()) {
    if (!absl::IsNotFound(record.status())) {
      peak.notes.push_back(absl::StrCat("warning: MFU peak file ignored: ", record.status().message()));
    }
    return peak;
  }
  const std::string cpu = CpuModelName();
  if (record->cpu_model != cpu) {
    peak.notes.push_back(
        absl::StrFormat("warning: MFU peak file %s ignored: measured on \"%s\", this machine is \"%s\"; run "
                        "`nats bench peak` "
                        "here",
                        peak_path, record->cpu_model, cpu));
    return peak;
  }
  if (record->threads != threads) {
    peak.notes.push_back(absl::StrFormat(
        "warning: MFU peak file %s ignored: measured on %d threads, this rank runs %d; run `nats bench peak "
        "--threads %d`",
        peak_path, record->threads, threads, threads));
    return peak;
  }
  if (!(record->gflops > 0)) {
    peak.notes.push_back(absl::StrFormat("warning: MFU peak file %s ignored: gflops %g is not positive",
                                         peak_path, record->gflops));
    return peak;
  }
  peak.gflops = record->gflops;
  peak.source = absl::StrFormat("%s, `nats bench peak` of %s", peak_path, record->date);
  return peak;
}

}  // namespace nats
