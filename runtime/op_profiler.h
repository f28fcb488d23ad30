// runtime/op_profiler.h
//
// Where a training step's time goes, by operator: while an OpProfiler is recording, every ATen operator,
// autograd backward node and named region of ours (RECORD_FUNCTION in the fused kernels) is timed through
// LibTorch's RecordFunction callbacks. Each record gets its total and its self time (total minus the records
// it encloses on the same thread), and its phase: "backward" when it runs inside an autograd node, else the
// label the caller set with SetPhase ("forward" by default, e.g. "optimizer"). bench/profile_step prints the
// table; docs/training.md shows how to read it. Overhead: about a microsecond per operator while recording,
// nothing otherwise. One recorder at a time per process.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nats {

struct OpTiming {
  std::string name;
  std::string phase;  // "backward" inside an autograd node, else the SetPhase label
  int64_t calls = 0;
  double total_seconds = 0;  // wall time between start and end, enclosed records included
  double self_seconds = 0;   // total minus the enclosed records on the same thread
  // Both summed over threads: an operator that LibTorch runs on its worker threads (inside an
  // at::parallel_for) can add more than the wall time it took.
};

class OpProfiler {
 public:
  OpProfiler();
  ~OpProfiler();  // stops recording if still on
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  void Start();  // clears earlier timings
  void Stop();
  // The phase of the records that start from now on outside autograd nodes (default "forward").
  void SetPhase(const std::string& phase);

  // One row per (name, phase), largest self time first.
  std::vector<OpTiming> Timings() const;
  // Sum of the durations of the top-level records (those no other record encloses) on the thread that called
  // Start, per phase: the wall time the operators account for; the rest is framework overhead between them.
  double TopLevelSeconds(const std::string& phase) const;
};

}  // namespace nats
