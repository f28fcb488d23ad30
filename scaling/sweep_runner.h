// scaling/sweep_runner.h
//
// Runs a planned sweep's cells one after another, each as its own `nats train --config <cell.textproto>
// --resume` process (optionally under a launcher such as "mpirun -np 8" or "srun"), so a cell is exactly the
// run a user would start by hand and a crash stays inside its cell. Idempotent:
//  - a cell whose <run_dir>/summary.json is finished for its config and steps is skipped;
//  - an interrupted cell resumes from its newest checkpoint (resume is exact, so its losses equal an
//    uninterrupted run's);
//  - a cell is locked while it runs (flock on <run_dir>/.lock, released by the kernel if the holder dies), so
//  two
//    sweep processes (or Slurm array tasks) never run the same cell; a locked cell is left to its holder.
// SIGINT/SIGTERM/SIGUSR1 to the sweep forward one SIGUSR1 to the running cell (the trainer saves a checkpoint
// and stops; under mpirun SIGUSR1 is the signal that reaches the ranks untouched, runtime/signals.h); the
// sweep then stops and says how to resume. A second signal forwards a second SIGUSR1 (the trainer exits at
// once). A failed cell is reported with the tail of its log and the sweep goes on; it is retried by the next
// run. After each cell, results.csv / results.jsonl are rebuilt (scaling/results_table.h).
#pragma once

#include <string>

#include "scaling/sweep_plan.h"

namespace nats::scaling {

struct SweepRunOptions {
  std::string nats_binary;  // the `nats` executable the cells run
  std::string launcher;     // prefix of each cell's command line, e.g. "mpirun -np 8"; empty: none
  int only_index = -1;      // run only this cell (a Slurm array task); -1: all
};

// The exit code for `nats sweep`: 0 when every cell it ran finished (or was already done), 1 when one failed,
// 128 + signal when stopped by a signal.
int RunSweepCells(const SweepPlan& plan, const SweepRunOptions& options);

// `nats sweep --list`: one line per cell (index, name, size, steps, tokens, tokens per parameter, FLOPs,
// estimated time, status), the totals and the cells left out.
void PrintSweepPlan(const SweepPlan& plan);

// Writes <cell run_dir>/cell.textproto (the cell's complete config) and returns its path.
absl::StatusOr<std::string> WriteCellConfig(const SweepCell& cell);

}  // namespace nats::scaling
