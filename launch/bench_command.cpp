// `nats bench peak`: the fp32 matmul peak of this machine, measured once and written to a file that every
// later run reads for its MFU (runtime/peak_flops.h, docs/training.md "Throughput and MFU"). Run it on an
// otherwise idle machine, with the threads one rank will have (`--threads`, default: what `nats train` gives
// one rank here, train.threads = 0).
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"
#include "runtime/peak_flops.h"
#include "runtime/trainer.h"

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats bench peak [--threads N] [--seconds S] [--sizes N,...] [--out FILE]\n"
    "  peak       fp32 matmul throughput (at::matmul of n x n matrices) on this machine's threads: a table "
    "per\n"
    "             size, and the best GFLOP/s with the CPU model, threads, LibTorch version and date written "
    "to\n"
    "             FILE, where `nats train` finds it for its MFU (train.peak_gflops, if set, wins)\n"
    "  --threads  intra-op and BLAS threads (default: what one rank of `nats train` gets here, train.threads "
    "= 0)\n"
    "  --seconds  timed seconds per size, after a warm-up (default 1.5)\n"
    "  --sizes    matrix sizes (default 1024,2048)\n"
    "  --out      the peak file (default $NATS_CACHE/peak.json, else the project's cache dir: now %s)\n";

std::string Help() {
  char buf[2048];
  std::snprintf(buf, sizeof(buf), kHelp, DefaultPeakPath().c_str());
  return buf;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "nats bench: %s\n\n%s", message.c_str(), Help().c_str());
  return 2;
}

}  // namespace

int RunBench(int argc, char** argv) {
  const std::string help = Help();
  ParsedFlags flags;
  if (auto exit_code = ParseCommandFlags(argc, argv, {"threads", "seconds", "sizes", "out"}, {}, help.c_str(),
                                         &flags, /*allow_positional=*/true)) {
    return *exit_code;
  }
  if (flags.positional.size() != 1 || flags.positional[0] != "peak") {
    return UsageError(
        flags.positional.empty()
            ? "missing the benchmark (peak)"
            : absl::StrCat("unknown benchmark '", absl::StrJoin(flags.positional, " "), "' (known: peak)"));
  }
  int threads = DefaultThreadsPerRank();
  if (flags.Has("threads") && (!absl::SimpleAtoi(flags.Get("threads"), &threads) || threads < 1)) {
    return UsageError(absl::StrCat("--threads ", flags.Get("threads"), ": must be an integer >= 1"));
  }
  double seconds = 1.5;
  if (flags.Has("seconds") &&
      (!absl::SimpleAtod(flags.Get("seconds"), &seconds) || !std::isfinite(seconds) || seconds <= 0)) {
    return UsageError(absl::StrCat("--seconds ", flags.Get("seconds"), ": must be a number > 0"));
  }
  std::vector<int64_t> sizes = {1024, 2048};
  if (flags.Has("sizes")) {
    sizes.clear();
    for (absl::string_view part : absl::StrSplit(flags.Get("sizes"), ',')) {
      int64_t n = 0;
      if (!absl::SimpleAtoi(part, &n) || n < 1 || n > 16384) {
        return UsageError(
            absl::StrCat("--sizes ", flags.Get("sizes"), ": want sizes in 1..16384, e.g. 1024,2048"));
      }
      sizes.push_back(n);
    }
  }
  const std::string out = flags.Has("out") ? flags.Get("out") : DefaultPeakPath();

  // The trainer's thread setup (Trainer::Create): LibTorch's pool and OpenBLAS's own.
  at::set_num_threads(threads);
  LimitBlasThreads(threads);
  PeakRecord record;
  record.threads = threads;
  record.cpu_model = CpuModelName();
  record.libtorch = TORCH_VERSION;
  record.date = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  std::printf("fp32 at::matmul on %d thread(s), %s, LibTorch %s\n", threads, record.cpu_model.c_str(),
              record.libtorch.c_str());
  std::printf("%8s %8s %10s %12s\n", "n", "reps", "seconds", "GFLOP/s");
  for (int64_t n : sizes) {
    const MatmulTiming t = MeasureMatmul(n, seconds);
    std::printf("%8lld %8lld %10.3f %12.1f\n", static_cast<long long>(t.size), static_cast<long long>(t.reps),
                t.seconds, t.gflops);
    std::fflush(stdout);
    record.timings.push_back(t);
    record.gflops = std::max(record.gflops, t.gflops);
  }
  if (absl::Status s = WritePeakFile(record, out); !s.ok()) {
    std::fprintf(stderr, "nats bench peak: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("peak %.1f GFLOP/s per process on %d thread(s) -> %s\n", record.gflops, threads, out.c_str());
  return 0;
}

}  // namespace nats::launch
