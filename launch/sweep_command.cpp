// `nats sweep --grid SWEEP.textproto`: a scaling-law grid (scaling/sweep_plan.h) listed, run cell after cell
// on this machine or under a launcher (scaling/sweep_runner.h), emitted as a Slurm job array
// (scaling/slurm_script.h), or only its results.csv rebuilt (scaling/results_table.h).
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <string>

#include "absl/strings/numbers.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"
#include "scaling/results_table.h"
#include "scaling/slurm_script.h"
#include "scaling/sweep_plan.h"
#include "scaling/sweep_runner.h"

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats sweep --grid SWEEP.textproto [--out DIR] [--list] [--launcher CMD] [--index I]\n"
    "                  [--emit slurm [--sbatch OPTION ...] [--max_parallel N]] [--collect]\n"
    "  Expands the grid (a config.proto Sweep: base config, model family by depth, axes, horizons in steps,\n"
    "  tokens or FLOP budgets, seeds; see configs/sweeps/ and docs/scaling.md) and runs each cell as its "
    "own\n"
    "  `nats train --resume` run in DIR/cells/<cell>. Finished cells are skipped, interrupted ones resume "
    "from\n"
    "  their checkpoints, a lock keeps two processes off one cell; Ctrl-C or SIGTERM saves and stops the\n"
    "  running cell. After each cell DIR/results.csv and results.jsonl are rebuilt (then: nats fit, nats "
    "plot).\n"
    "  --grid FILE        the sweep file\n"
    "  --out DIR          where cells and results go (default: the file's out_dir, else runs/sweeps/<name>)\n"
    "  --list             print the cells with their size, steps, tokens, FLOPs, estimated time and status\n"
    "  --launcher CMD     run each cell under CMD, e.g. \"mpirun -np 8\" or \"srun\" (default: none)\n"
    "  --index I          run only cell I (0-based, the order of --list; a Slurm array task)\n"
    "  --emit slurm       write DIR/sweep.sbatch, a job array with one task per cell, instead of running\n"
    "  --sbatch OPTION    an extra #SBATCH option for --emit slurm, repeatable (e.g. --sbatch=--gres=gpu:8)\n"
    "  --max_parallel N   --emit slurm: at most N array tasks at once\n"
    "  --collect          only rebuild results.csv / results.jsonl from the cells' files\n"
    "Exit status: 0 all cells done, 1 a cell failed (rerun to retry), 2 usage, 128+N stopped by signal N.\n";

}  // namespace

int RunSweep(int argc, char** argv) {
  ParsedFlags flags;
  if (auto exit_code = ParseCommandFlags(
          argc, argv, {"grid", "out", "launcher", "index", "emit", "sbatch", "max_parallel"},
          {"list", "collect"}, kHelp, &flags)) {
    return *exit_code;
  }
  if (flags.Get("grid").empty()) {
    std::fprintf(stderr, "sweep: --grid SWEEP.textproto is required (see configs/sweeps/)\n%s", kHelp);
    return 2;
  }
  const bool emit = flags.Has("emit");
  if (emit && flags.Get("emit") != "slurm") {
    std::fprintf(stderr, "sweep: --emit %s: the only target is slurm\n", flags.Get("emit").c_str());
    return 2;
  }
  if ((flags.Has("sbatch") || flags.Has("max_parallel")) && !emit) {
    std::fprintf(stderr, "sweep: --sbatch and --max_parallel belong to --emit slurm\n");
    return 2;
  }
  int index = -1;
  if (flags.Has("index") && (!absl::SimpleAtoi(flags.Get("index"), &index) || index < 0)) {
    std::fprintf(stderr, "sweep: --index %s: give a cell index >= 0 (see --list)\n",
                 flags.Get("index").c_str());
    return 2;
  }
  int max_parallel = 0;
  if (flags.Has("max_parallel") &&
      (!absl::SimpleAtoi(flags.Get("max_parallel"), &max_parallel) || max_parallel < 1)) {
    std::fprintf(stderr, "sweep: --max_parallel %s: give a count >= 1\n", flags.Get("max_parallel").c_str());
    return 2;
  }
  absl::StatusOr<scaling::SweepPlan> plan = scaling::PlanSweep(flags.Get("grid"), flags.Get("out"));
  if (!plan.ok()) {
    std::fprintf(stderr, "sweep: %s\n", std::string(plan.status().message()).c_str());
    return 1;
  }
  if (index >= static_cast<int>(plan->cells.size())) {
    std::fprintf(stderr, "sweep: --index %d: the grid has %zu cells (0..%zu)\n", index, plan->cells.size(),
                 plan->cells.size() - 1);
    return 2;
  }
  // The cells run this very binary, so a sweep never mixes two builds.
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  const std::string nats_binary = n > 0 ? std::string(self, n) : "nats";

  if (flags.Has("list")) {
    scaling::PrintSweepPlan(*plan);
    return 0;
  }
  if (flags.Has("collect")) {
    if (absl::Status s = scaling::WriteResults(*plan); !s.ok()) {
      std::fprintf(stderr, "sweep: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    std::printf("sweep: %s/results.csv rebuilt (%zu cells)\n", plan->out_dir.c_str(), plan->cells.size());
    return 0;
  }
  if (emit) {
    scaling::SlurmOptions options;
    options.nats_binary = nats_binary;
    if (flags.Has("launcher")) options.launcher = flags.Get("launcher");
    if (auto it = flags.values.find("sbatch"); it != flags.values.end()) options.sbatch_options = it->second;
    options.max_parallel = max_parallel;
    absl::StatusOr<std::string> path = scaling::EmitSlurmScript(*plan, options);
    if (!path.ok()) {
      std::fprintf(stderr, "sweep: %s\n", std::string(path.status().message()).c_str());
      return 1;
    }
    std::printf("sweep: wrote %s (%zu array tasks, one per cell; launcher \"%s\")\nsubmit: sbatch %s\n",
                path->c_str(), plan->cells.size(), options.launcher.c_str(), path->c_str());
    return 0;
  }
  scaling::SweepRunOptions options;
  options.nats_binary = nats_binary;
  options.launcher = flags.Get("launcher");
  options.only_index = index;
  return scaling::RunSweepCells(*plan, options);
}

}  // namespace nats::launch
