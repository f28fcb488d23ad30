// runtime/checkpointing.h
//
// Collective save and load of the training state as sharded checkpoints (docs/architecture.md section 5; the
// format and the commit protocol are in checkpoints/checkpoint.proto and checkpoints/checkpoint_dir.h).
//
// The state is a list of StateTensor: a named global tensor and the contiguous run of its flattened
// elements that this rank holds. The same name may be held by several ranks, overlapping or not:
//  - model parameters under plain data parallelism: every rank passes the full tensor;
//  - ZeRO-1 optimizer state: each rank passes its pieces (AdamW::ExportState, via FromNamedShards).
// SaveCheckpoint gathers every rank's declaration (one AllGatherV) and every rank computes the same
// write plan: each element is written exactly once, by one of the ranks that hold it, and a range held
// by several ranks is split among them (pieces of >= 8 MiB, least-loaded rank first), so replicated
// parameters are written in parallel rather than all by rank 0.
//
// Save sequence (4 small collectives + the writes): declarations -> rank 0 creates step_<N>.partial
// -> every rank writes and fsyncs rank_<r>.bin -> reports (slices, CRCs, RNG bytes) gathered -> rank 0
// writes manifest.pb, renames the directory to step_<N>, updates `latest`, applies retention. Any rank's
// error is returned on every rank (nothing hangs, nothing is committed); a crash at any point leaves the
// previous checkpoint as the newest complete one.
//
// Load: every rank reads what it asks for directly from the blobs (any world size; resharding is a
// read), CRC-checked; the verdict is agreed across ranks so that all fail or none.
//
// `comm` carries only small CPU tensors (declarations, reports, verdicts): pass an MPI or local
// communicator, also when the gradients travel over NCCL. Device tensors are copied to host memory for
// writing (one tensor at a time) and filled with copy_ on load. Saves are synchronous: training resumes
// when the checkpoint is durable.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "checkpoints/checkpoint.pb.h"
#include "checkpoints/checkpoint_dir.h"
#include "parallel/adamw.h"
#include "parallel/communicator.h"
#include "runtime/config.pb.h"

namespace nats {

struct StateTensor {
  std::string name;                   // "model/<param>", "optim/<param>.exp_avg", "optim/step", ...
  at::Tensor tensor;                  // this rank's elements; any shape, flattened in row-major order
  std::vector<int64_t> global_shape;  // the shape of the whole tensor
  int64_t global_offset = 0;          // flat index of tensor's first element in the whole tensor
};

// A tensor this rank holds whole (a parameter under plain data parallelism).
StateTensor WholeTensor(std::string name, const at::Tensor& tensor);
// AdamW/ZeroOptimizer state (parallel/adamw.h) as state tensors "<prefix><shard name>" of global shape
// [global_numel]; the tensors are shared, not copied.
std::vector<StateTensor> FromNamedShards(const std::vector<parallel::NamedShard>& shards,
                                         const std::string& prefix);
// The inverse, for AdamW::ImportState after a load: entries whose name starts with `prefix`.
std::vector<parallel::NamedShard> ToNamedShards(const std::vector<StateTensor>& state,
                                                const std::string& prefix);

struct SaveResult {
  std::string step_dir;                // <root>/step_<N>
  uint64_t bytes_this_rank = 0;        // tensor bytes this rank wrote
  uint64_t bytes_total = 0;            // size of all blobs together
  double seconds = 0;                  // wall time of the whole save on this rank
  std::vector<int64_t> deleted_steps;  // by retention (rank 0; empty elsewhere)
  std::string retention_error;         // rank 0: why retention failed; the checkpoint itself is committed
  std::string latest_error;            // rank 0: why `latest` was not updated; the checkpoint is committed
};

// Collective over `comm`. `header` holds the run-level fields (config, consumed_samples, dp, sp,
// zero_stage, history, elapsed_seconds, ...); rank 0's copy is stored, and its tensors, rank_states,
// blobs, step, world_size and format_version are filled in here. `rng_state` is this rank's generator
// state (see CaptureCpuRngState), stored per rank. InvalidArgument (on every rank) when ranks disagree
// on a tensor's dtype or global shape, or when some elements of a tensor are held by no rank.
// A failed save (any rank's write, the manifest, the commit rename) returns the same error on every rank,
// starting "checkpoint step <N> was not saved: " and naming the file, removes the partial save and
// leaves every earlier checkpoint as it was. Out of space (ENOSPC, EDQUOT, or less free space under
// `root` than the blobs need, checked before writing) is ResourceExhausted and states the bytes needed.
absl::StatusOr<SaveResult> SaveCheckpoint(parallel::Communicator& comm, const std::string& root, int64_t step,
                                          const std::vector<StateTensor>& state,
                                          const checkpoint::Manifest& header, const std::string& rng_state,
                                          const checkpoint::RetentionPolicy& retention);

struct LoadOptions {
  bool verify_crc = true;
  // When given, a shape or dtype mismatch names the model/nats config fields that differ between the
  // checkpoint and this config ("the model config changed: model.d_model 128 -> 64").
  const config::Config* current_config = nullptr;
  // Targets whose name the checkpoint lacks are skipped and listed in LoadResult::missing instead of
  // failing (e.g. loading weights-only state into a fresh optimizer).
  bool allow_missing = false;
};

struct LoadResult {
  std::string step_dir;
  checkpoint::Manifest manifest;
  std::vector<std::string> missing;
};

// Collective over `comm` (only to agree on the verdict). `path` is a step directory or a checkpoint root
// (its latest complete checkpoint). Fills each target's tensor in place with elements
// [global_offset, global_offset + numel) of the stored tensor, after checking that the stored dtype and
// global shape equal the target's. Targets may differ per rank.
absl::StatusOr<LoadResult> LoadCheckpoint(parallel::Communicator& comm, const std::string& path,
                                          std::vector<StateTensor>& targets, const LoadOptions& options = {});

// The checkpoint root of a run: checkpoint.dir, or <train.run_dir>/ckpt when that is empty.
std::string CheckpointRoot(const config::Config& config);
checkpoint::RetentionPolicy RetentionFromConfig(const config::CheckpointConfig& config);

// The default CPU generator's state as bytes, and back (InvalidArgument for bytes of another layout).
std::string CaptureCpuRngState();
absl::Status RestoreCpuRngState(const std::string& bytes);
// The RNG bytes `rank` saved, or nullopt when the checkpoint was saved by another world size (then the
// per-rank streams do not correspond; the caller reseeds from seed, step and rank).
std::optional<std::string> SavedRngState(const checkpoint::Manifest& manifest, int rank, int world_size);

// "model.d_model 128 -> 64, nats.window 16 -> 32": the model and nats fields that differ; empty if none.
std::string DescribeModelConfigChange(const config::Config& saved, const config::Config& current);

// When to save: every checkpoint.interval_steps steps and/or when checkpoint.interval_minutes passed
// since the last save (both 0: never, except on a stop request).
class CheckpointSchedule {
 public:
  CheckpointSchedule(const config::CheckpointConfig& config, absl::Time last_save);
  // This rank's view; `step` counts completed optimizer steps. Clocks differ between ranks, so decide
  // with DecideCheckpoint, not with this alone.
  bool Due(int64_t step, absl::Time now) const;
  void MarkSaved(absl::Time now) { last_save_ = now; }

 private:
  int64_t interval_steps_ = 0;
  absl::Duration interval_ = absl::ZeroDuration();
  absl::Time last_save_;
};

struct CheckpointDecision {
  bool save = false;  // some rank found the schedule due, or a stop was requested
  bool stop = false;  // some rank received SIGTERM/SIGINT/SIGUSR1 (runtime/signals.h): save, then exit
};

// One 2-element all-reduce (max) of (schedule.Due, StopRequested()), so every rank takes the same branch.
// Call after every optimizer step.
absl::StatusOr<CheckpointDecision> DecideCheckpoint(parallel::Communicator& comm,
                                                    const CheckpointSchedule& schedule, int64_t step,
                                                    absl::Time now);

}  // namespace nats
