// runtime/run_directory.h
//
// What `nats train` does with train.run_dir and the checkpoint root before its first step, so that a run
// is continued only when asked, is never destroyed by accident, and is never continued under a config
// that silently changes what it trains (docs/training.md, "Checkpoints and resume").
//
//  - A fresh start (no --resume) is refused when the directory holds a run: a complete checkpoint under
//    the checkpoint root, or a metrics log with lines. --overwrite deletes the checkpoints and moves the
//    old metrics logs, config.textproto and tb/ to <run_dir>/overwritten_<UTC time>/ (never truncating).
//  - --resume takes the newest complete step under the root (checkpoints/checkpoint_dir.h; `latest` is
//    not trusted over the listing), or starts at step 0 when there is none. --resume_from=DIR_OR_STEP
//    takes that step directory, checkpoint root, or step number under the run's root. An older step of
//    the run's own root is a rollback: once it has loaded, the newer steps are renamed
//    step_<N>.abandoned so that later resumes continue the new timeline. A checkpoint of another root
//    starts this run from it, and is refused when this run's root already holds checkpoints.
//  - The saved config is compared with this one field by field (protobuf reflection over every section).
//    Architecture fields (every model.* field but init_std, nats.layers), data.tokenizer and
//    train.batch_size are refused; data.train_path, data.val_path and train.seed are refused unless
//    --allow_config_change; any other change is accepted, printed and logged as a "config_change" line.
//  - PlanRunStart only reads. OpenRunDirectory, called after the checkpoint has loaded, does every write
//    (overwrite, rollback renames, config.textproto, the metrics log): a refused or failed resume leaves
//    the directory exactly as it was.
//
// Metrics: rank 0 appends to <run_dir>/metrics.jsonl and rank r > 0 to <run_dir>/metrics.rank<r>.jsonl,
// whatever the world size, so a resume on another number of ranks continues the same files. Logs are
// appended, never truncated; after a resume, steps beyond the checkpoint are logged again (the last line
// of a step is the one that counts), after a {"kind":"resume"} line.
//
// Both functions are collective over `comm`: rank 0 looks at the (shared) file system and decides, every
// rank gets the same verdict.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "runtime/config.h"
#include "runtime/config.pb.h"
#include "runtime/metrics_log.h"

namespace nats {

struct RunDirectoryOptions {
  bool resume = false;      // --resume (also implied by a non-empty resume_from)
  std::string resume_from;  // --resume_from: step directory, checkpoint root or step number
  bool allow_config_change = false;
  bool overwrite = false;  // --overwrite; the caller refuses it together with resume
};

enum class ResumeChange {
  kAccepted,       // printed and logged
  kNeedsOverride,  // refused unless --allow_config_change
  kRefused,        // the checkpoint cannot continue under it
};
ResumeChange ClassifyResumeChange(const std::string& field);

// OK, or InvalidArgument naming every refused change of `step_dir`'s config with both values and the fix.
absl::Status CheckResumeChanges(const std::vector<ConfigChange>& changes, bool allow_config_change,
                                const std::string& step_dir);

// "metrics.jsonl" for rank 0, "metrics.rank<r>.jsonl" otherwise.
std::string MetricsFileName(int rank);

struct RunStart {
  std::string resume_dir;  // the step directory to load; empty: start at step 0
  bool rollback = false;   // resume_dir is older than the newest complete step of the run's own root
  // Rank 0 only (empty elsewhere): the accepted config changes, and what to print about the start.
  std::vector<ConfigChange> changes;
  std::vector<std::string> notes;
};

// Collective; writes nothing. The run-directory guard, the choice of checkpoint and the config check.
absl::StatusOr<RunStart> PlanRunStart(parallel::Communicator& comm, const config::Config& cfg,
                                      const RunDirectoryOptions& options);

// Collective, after `start.resume_dir` (if any) has loaded as step `step`: --overwrite's deletions, a
// rollback's renames, config.textproto, this rank's metrics log (opened into `log`), and on rank 0 the
// printed notes and the "overwrite" / "resume" / "config_change" JSON lines.
absl::Status OpenRunDirectory(parallel::Communicator& comm, const config::Config& cfg,
                              const RunDirectoryOptions& options, const RunStart& start, int64_t step,
                              MetricsLog* log);

}  // namespace nats
