// scaling/sweep_plan.h
//
// A sweep file (config.proto `Sweep`) expanded into its cells: one complete, validated `nats train` config
// per point of the grid (model size x axes x horizon x seed), each with a name derived from its settings, its
// own run directory <out>/cells/<name>, its parameter counts, steps, tokens and planned FLOPs. Pure planning:
// reads the sweep and base config files, writes nothing. The rules (docs/scaling.md):
//  - family depth L: n_layer = L, d_model = aspect_ratio L, n_head = d_model / head_dim,
//    lr = base lr (lr_base_width / d_model)^lr_width_exponent;
//  - then the axes' overrides, in the file's order (an axis may override what the family set);
//  - horizon: steps as given; tokens / (batch_size x context_length); or a FLOP budget C:
//    steps = round(C / (FLOPs per token x tokens per step)), FLOPs per token by scaling/flop_count.h with
//    nats_planning_density for NAtS layers;
//  - warmup at most max_warmup_fraction of the steps; checkpoint.dir cleared (each cell keeps its own);
//    relative data paths made absolute (cells may run from another directory, e.g. under Slurm).
// Cells under min_steps are left out and listed in `left_out`.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/config.pb.h"
#include "scaling/flop_count.h"

namespace nats::scaling {

struct SweepCell {
  int index = 0;  // position in the plan (the Slurm array index)
  std::string name;
  config::Config config;  // complete; train.run_dir = <out>/cells/<name>
  // (column, value) of every axis (the sweep's own names), e.g. ("variant", "dense"), ("lambda", "1e-5").
  std::vector<std::pair<std::string, std::string>> labels;
  int depth = 0;            // family depth; 0 without a family
  double budget_flops = 0;  // the cell's FLOP budget; 0 when the horizon is steps or tokens
  int64_t steps = 0;
  int64_t tokens = 0;          // steps x batch_size x context_length
  double flops_per_token = 0;  // planned (nats_planning_density)
  double flops = 0;            // flops_per_token x tokens
  ParameterCounts params;
};

struct SweepPlan {
  config::Sweep sweep;
  std::string grid_path;                   // the sweep file
  std::string out_dir;                     // absolute
  std::vector<std::string> label_columns;  // axis names, in the file's order
  std::vector<SweepCell> cells;
  std::vector<std::string> left_out;  // "<name>: 12 steps < min_steps 20"
};

// Loads and expands the sweep file. `out_override` (non-empty) replaces sweep.out_dir. Errors name the sweep
// file, the axis or cell, and the fix.
absl::StatusOr<SweepPlan> PlanSweep(const std::string& grid_path, const std::string& out_override);

// A number as cell names and labels show it: "16", "0.5", "3e11", "1e-5", "1.5e12".
std::string ShortNumber(double value);

}  // namespace nats::scaling
