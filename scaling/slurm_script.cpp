#include "scaling/slurm_script.h"

#include <filesystem>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace nats::scaling {
namespace fs = std::filesystem;

std::string ShellQuote(const std::string& word) {
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

absl::StatusOr<std::string> EmitSlurmScript(const SweepPlan& plan, const SlurmOptions& options) {
  const fs::path out = plan.out_dir;
  std::error_code ec;
  fs::create_directories(out / "slurm", ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat(out.string(), ": cannot create (", ec.message(), ")"));
  const std::string grid = fs::absolute(plan.grid_path).lexically_normal().string();
  std::string array = absl::StrCat("0-", plan.cells.size() - 1);
  if (options.max_parallel > 0) absl::StrAppend(&array, "%", options.max_parallel);
  std::string script = absl::StrCat(
      "#!/bin/bash\n", "# Written by `nats sweep --grid ", grid, " --emit slurm`: one array task per cell (",
      plan.cells.size(), " cells;\n", "# `nats sweep --grid ", grid, " --out ", plan.out_dir,
      " --list` shows them). Task i runs cell i: skipped\n",
      "# if finished, resumed from its checkpoint if interrupted, locked against a second task. Resubmit "
      "this\n",
      "# script after a time limit or preemption to continue every unfinished cell.\n",
      "#SBATCH --job-name=nats-sweep-", fs::path(plan.grid_path).stem().string(), "\n",
      "#SBATCH --array=", array, "\n", "#SBATCH --output=", (out / "slurm" / "%A_%a.out").string(), "\n",
      "#SBATCH --open-mode=append\n", "#SBATCH --chdir=", fs::current_path().string(), "\n",
      // B: to the batch shell, i.e. the sweep (exec below), which forwards SIGUSR1 to the cell's launcher.
      "#SBATCH --signal=B:USR1@120\n");
  for (const std::string& option : options.sbatch_options) absl::StrAppend(&script, "#SBATCH ", option, "\n");
  absl::StrAppend(&script, "set -euo pipefail\n",
                  ": \"${SLURM_ARRAY_TASK_ID:?run this script with sbatch (it is a job array)}\"\n", "exec ",
                  ShellQuote(options.nats_binary), " sweep --grid ", ShellQuote(grid), " --out ",
                  ShellQuote(plan.out_dir), " --index \"$SLURM_ARRAY_TASK_ID\" --launcher ",
                  ShellQuote(options.launcher), "\n");
  const fs::path path = out / "sweep.sbatch";
  {
    std::ofstream file(path, std::ios::trunc);
    file << script;
    if (!file.flush()) return absl::PermissionDeniedError(absl::StrCat(path.string(), ": cannot write"));
  }
  fs::permissions(path, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                  fs::perm_options::add, ec);
  return path.string();
}

}  // namespace nats::scaling
