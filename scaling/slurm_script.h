// scaling/slurm_script.h
//
// `nats sweep --emit slurm`: an sbatch job-array script with one array task per cell. Task i runs
// `nats sweep --grid <file> --out <dir> --index i --launcher <launcher>`, so it has the runner's guarantees
// (skip if finished, resume if interrupted, a lock against a second task on the same cell). Slurm sends
// SIGUSR1 to the batch shell 120 s before the time limit (`--signal=B:USR1@120`); the sweep forwards it to
// the cell, which saves a checkpoint; resubmitting the same script continues every unfinished cell.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scaling/sweep_plan.h"

namespace nats::scaling {

struct SlurmOptions {
  std::string nats_binary;                  // absolute path of `nats`
  std::string launcher = "srun";            // runs each cell's `nats train` inside the allocation
  std::vector<std::string> sbatch_options;  // extra "#SBATCH" options, e.g. "--partition=gpu", "--nodes=2"
  int max_parallel = 0;                     // "%N" on --array: at most N tasks at once; 0: no limit
};

// Writes <out>/sweep.sbatch (executable) and returns its path.
absl::StatusOr<std::string> EmitSlurmScript(const SweepPlan& plan, const SlurmOptions& options);

// A word quoted for a POSIX shell ('...' with embedded quotes escaped).
std::string ShellQuote(const std::string& word);

}  // namespace nats::scaling
