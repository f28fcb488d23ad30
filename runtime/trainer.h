// runtime/trainer.h
//
// The training loop (docs/architecture.md section 4). The Trainer is the only place that knows the order of a
// step: loader -> forward -> loss -> backward (gradients synchronised over data-parallel ranks) ->
// clip -> optimizer step -> metrics -> periodic evaluation. It logs a progress line on rank 0 and
// JSON lines on every rank (rank 0: <train.run_dir>/metrics.jsonl, rank r: metrics.rank<r>.jsonl).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
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
  // train.objective = DISTILL: the post-training loss (runtime/distill_loss.h) of the student in evaluation
  // mode (argmax types) against dense attention on the same windows (loss and perplexity above are the
  // student's); -1 otherwise.
  double distill_loss = -1;
};

struct TrainOptions {
  // Continue from the newest complete checkpoint under the run's checkpoint root (checkpoint.dir or
  // <train.run_dir>/ckpt) when one exists; start fresh otherwise. The run-directory rules (fresh runs
  // never overwrite a run, refused config changes) are in runtime/run_directory.h.
  bool resume = false;
  // Continue from this step directory, checkpoint root, or step number under the run's root (implies
  // resume). An older step of the run's own root rolls back: the newer steps are renamed .abandoned.
  std::string resume_from;
  // Accept a changed data.train_path / data.val_path / train.seed on resume (architecture changes are
  // always refused).
  bool allow_config_change = false;
  // Start fresh in a run directory that holds a run: delete its checkpoints, move its metrics aside.
  bool overwrite = false;
  // How to continue after a stop signal, printed with the stop message ("resume with <this>"); `nats train`
  // fills in its own command line. Empty: a generic hint.
  std::string resume_command;
  // Print the effective config (defaults included) at start; it is always written to
  // <train.run_dir>/config.textproto.
  bool print_config = false;
  // Fault injection (tests; Trainer::Create adds NATS_FAULT_LOSS_SCALE="BATCH:FACTOR,..."): the loss of
  // global batch BATCH (consumed samples / train.batch_size) on data-parallel rank 0 is multiplied by FACTOR
  // (nan, inf or a large number: a bad batch) before backward, so the bad-step guard (runtime/step_guard.h)
  // sees it.
  std::map<int64_t, double> fault_loss_scale;
};

struct TrainSummary {
  int64_t steps = 0;
  int64_t parameters = 0;
  double first_val_loss = 0;  // before the first step
  double last_val_loss = 0;
  double last_val_bpb = 0;
  double best_val_loss = 0;  // lowest scheduled validation loss, earlier attempts (resumed from) included
  double last_train_loss = 0;
  // steps is the step reached; a resumed run did steps - resumed_from_step of them in this process, and
  // tokens_per_second and seconds cover this process only.
  double tokens_per_second = 0;  // all ranks
  double seconds = 0;
  int64_t resumed_from_step = -1;  // -1: fresh start
  bool stopped_by_signal = false;  // a SIGTERM/SIGINT/SIGUSR1 stopped the run after a checkpoint
  int64_t skipped_steps = 0;       // bad steps the guard skipped (runtime/step_guard.h)
  int64_t rollbacks = 0;           // rollbacks to the last checkpoint after guard.max_bad_steps bad steps
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

  // One step's gradients without the optimizer step: zeroes the gradients, runs forward and backward over the
  // micro-batches of this rank's part of the next global batch (the loader's cursor does not move) and
  // averages them over the ranks. Afterwards every parameter's grad() is the gradient of the step's objective
  // (mean token loss of the global batch plus the sparsity regulariser once per sequence, docs/training.md),
  // the same for every dp x sp layout and micro-batch size. Returns the mean loss. Train() runs it each step.
  absl::StatusOr<double> ForwardBackward();
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

// Limits OpenBLAS's own thread pool (which at::set_num_threads does not reach) to `threads`. The build links
// OpenBLAS (the fused kernel's tiles call it), so this is a direct call. Trainer::Create and `nats bench
// peak` set both.
void LimitBlasThreads(int threads);

}  // namespace nats
