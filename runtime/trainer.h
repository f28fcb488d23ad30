// runtime/trainer.h
//
// The training loop (DESIGN.md section 4). The Trainer is the only place that knows the order of a
// step: loader -> forward -> loss -> backward (gradients synchronised over data-parallel ranks) ->
// clip -> optimizer step -> metrics -> periodic evaluation. It logs a progress line on rank 0 and
// JSON lines (metrics.jsonl in train.run_dir) on every rank.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/config.pb.h"

namespace nats {

struct EvalResult {
  double loss = 0;           // mean token cross-entropy (nats)
  double perplexity = 0;     // exp(loss)
  double bits_per_byte = 0;  // loss in bits per UTF-8 byte of the evaluated text (compares tokenizers)
  int64_t tokens = 0;
};

struct TrainOptions {
  // Continue from the newest complete checkpoint under the run's checkpoint root (checkpoint.dir or
  // <train.run_dir>/ckpt) when one exists; start fresh otherwise.
  bool resume = false;
};

struct TrainSummary {
  int64_t steps = 0;
  int64_t parameters = 0;
  double first_val_loss = 0;  // before the first step
  double last_val_loss = 0;
  double last_val_bpb = 0;
  double last_train_loss = 0;
  double tokens_per_second = 0;  // over the whole run, all ranks
  double seconds = 0;
  int64_t resumed_from_step = -1;  // -1: fresh start
  bool stopped_by_signal = false;  // a SIGTERM/SIGINT/SIGUSR1 stopped the run after a checkpoint
  std::string last_checkpoint;     // step directory of the last checkpoint written, if any
};

class TrainerState;

class Trainer {
 public:
  // Validates the config, sets threads and seeds, opens the shards, builds model and optimizer.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const config::Config& config,
                                                         const TrainOptions& options = {});
  ~Trainer();

  absl::StatusOr<TrainSummary> Train();
  absl::StatusOr<EvalResult> Evaluate();

  // Writes a checkpoint of the current step now (collective); returns its step directory.
  absl::StatusOr<std::string> SaveCheckpointNow();

  // Parameters and step, for tests that compare runs.
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() const;
  int64_t step() const;

  // Rank 0 of the world prints summaries; other ranks stay quiet.
  bool is_root() const;

 private:
  explicit Trainer(std::unique_ptr<TrainerState> state);
  std::unique_ptr<TrainerState> state_;
};

// Threads per rank when train.threads = 0: hardware threads / ranks on this node (at least 1).
int DefaultThreadsPerRank();

}  // namespace nats
