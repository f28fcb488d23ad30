// scaling/results_table.h
//
// results.csv and results.jsonl of a sweep: one row per planned cell, in plan order, rebuilt from the files
// the cells leave (so any process, e.g. one Slurm array task, can rebuild it, and a rerun gives the same
// table):
//   <run_dir>/summary.json  (`nats train` at the end of a finished run: losses in full precision, tokens/s)
//   <run_dir>/metrics.jsonl (NAtS type fractions, mask density and KV fraction: the mean over layers of the
//                           train records of the last 10% of steps, each step counted once)
//   <run_dir>/sweep_cell.json (the runner: wall seconds over attempts, attempts, last exit status)
// Columns (docs/scaling.md): cell, status (ok | failed | pending), variant, attention, depth, n_layer,
// d_model, n_head, nats_lambda, nats_window, seed, budget_flops, steps, tokens, params (= non-embedding, the
// N of the fits), params_total, params_non_embedding, params_embedding, flops_per_token, flops (planned; NAtS
// cells at nats_planning_density), flops_executed (at the measured mask density), loss (= final_val_loss),
// final_val_loss, best_val_loss, val_bpb, kv_fraction, frac_global, frac_local, frac_sliding, mask_density,
// tokens_per_s, wall_s, config_hash, run_dir, then one column per sweep axis not named "variant".
// Values a cell does not have yet are empty. Doubles are written with 17 significant digits.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "scaling/sweep_plan.h"

namespace nats::scaling {

struct CellResult {
  std::string status = "pending";  // ok | failed | pending
  bool finished = false;
  double final_val_loss = 0, best_val_loss = 0, val_bpb = 0, tokens_per_s = 0;
  double wall_s = 0;
  bool has_nats_stats = false;
  double kv_fraction = 1, frac_global = 0, frac_local = 0, frac_sliding = 0, mask_density = 1;
};

// What the cell's files say. A summary.json from another config or horizon does not count as finished.
CellResult ReadCellResult(const SweepCell& cell);
// The same without the NAtS statistics (summary.json and sweep_cell.json only; the metrics log is not read):
// status, losses and wall time, for the runner's bookkeeping.
CellResult ReadCellSummary(const SweepCell& cell);

// The label a cell shows in plots: the "variant" axis when there is one, else "dense" or "nats_l<lambda>".
std::string CellVariant(const SweepCell& cell);

// Writes <out>/results.csv and <out>/results.jsonl atomically (checkpoints/durable_file.h).
absl::Status WriteResults(const SweepPlan& plan);

// The runner's per-cell record <run_dir>/sweep_cell.json: adds one attempt of `seconds` with `exit_code`.
void RecordAttempt(const SweepCell& cell, double seconds, int exit_code);

}  // namespace nats::scaling
