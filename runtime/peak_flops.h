// runtime/peak_flops.h
//
// The fp32 matmul peak that MFU divides by (docs/training.md "Throughput and MFU"). It is measured once per
// machine by `nats bench peak` (written to <cache dir>/peak.json) or stated in train.peak_gflops, never at a
// run's start: there every rank measured at once while the others loaded the cores, so the peak (and the MFU)
// moved with the number of ranks and with whatever else ran.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nats {

struct MatmulTiming {
  int64_t size = 0;  // n of the n x n x n product
  int64_t reps = 0;
  double seconds = 0;
  double gflops = 0;
};

// fp32 at::matmul of two n x n matrices on the current intra-op (and BLAS) threads: warm-up products first
// (at least one, about a tenth of `seconds`), then as many as fit in `seconds` (at least one).
MatmulTiming MeasureMatmul(int64_t n, double seconds);

// What `nats bench peak` measured on one machine.
struct PeakRecord {
  double gflops = 0;  // the best of `timings`, per process
  int threads = 0;    // intra-op and BLAS threads it ran on
  std::string cpu_model;
  std::string libtorch;
  std::string date;  // UTC, ISO 8601
  std::vector<MatmulTiming> timings;
};

// /proc/cpuinfo's first "model name"; "unknown" where there is none.
std::string CpuModelName();

// <data::DefaultCacheDir()>/peak.json ($NATS_CACHE/peak.json when NATS_CACHE is set).
std::string DefaultPeakPath();

absl::Status WritePeakFile(const PeakRecord& record, const std::string& path);
// NotFoundError when there is no file; InvalidArgument / DataLoss naming the path when it is not one.
absl::StatusOr<PeakRecord> ReadPeakFile(const std::string& path);

// The per-rank peak a run divides by, and where it came from.
struct RunPeak {
  double gflops = 0;               // per rank; 0: none known, the run reports no MFU
  std::string source;              // for the start line: "train.peak_gflops" or the file and its measurement
  std::vector<std::string> notes;  // a peak file that was ignored, and why (one line each)
};

// train.peak_gflops when > 0; else the peak file when it was measured on this CPU model with `threads`
// threads; else none.
RunPeak ResolveRunPeak(double config_gflops, int threads, const std::string& peak_path);

}  // namespace nats
