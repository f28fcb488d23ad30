// `nats plot RUN_DIR... [--out DIR]`: figures of runs (launch/plot_runs.py, matplotlib from Debian);
// `nats plot --sweep SWEEP_DIR [--out DIR]`: scaling-law figures of a `nats sweep` directory and its `nats
// fit` result (launch/plot_scaling.py). The plotting lives in Python because matplotlib is the well-kept
// library for it; this command only finds the script and the interpreter and hands over the arguments. The
// flags are parsed here, like every other command's (launch/flag_parser.h), and handed over in one spelling,
// so `--out=DIR` and `--out DIR` both work and --help needs no Python.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "launch/commands.h"
#include "launch/flag_parser.h"

#ifndef NATS_PLOT_SCRIPT
#define NATS_PLOT_SCRIPT "launch/plot_runs.py"
#endif
#ifndef NATS_PLOT_SCALING_SCRIPT
#define NATS_PLOT_SCALING_SCRIPT "launch/plot_scaling.py"
#endif

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats plot RUN_DIR... [--out DIR]\n"
    "       nats plot --sweep SWEEP_DIR [--out DIR]\n"
    "  PNG + SVG figures of training runs from their <run_dir>/metrics.jsonl (launch/plot_runs.py):\n"
    "  loss.png (training and validation loss, one colour per run) and, for NAtS runs, nats_<run>.png\n"
    "  (per layer: global / local / sliding fractions and the KV fraction against step)\n"
    "  RUN_DIR      train.run_dir of one or more runs\n"
    "  --sweep DIR  instead, the --out folder of `nats sweep`: scaling-law figures (launch/plot_scaling.py)\n"
    "               from DIR/results.csv, DIR/fit.json (`nats fit`; without it, data-only figures) and\n"
    "               the cells' metrics.jsonl: isoflop, loss_vs_params, frontier, loss_vs_kv, curves,\n"
    "               and index.md\n"
    "  --out DIR    output folder (default: <first RUN_DIR>/plots, or <SWEEP_DIR>/plots)\n"
    "Environment: NATS_PYTHON (default /usr/bin/python3, needs python3-matplotlib), NATS_PLOT_SCRIPT,\n"
    "NATS_PLOT_SCALING_SCRIPT.\n";

}  // namespace

int RunPlot(int argc, char** argv) {
  ParsedFlags flags;
  if (auto exit_code =
          ParseCommandFlags(argc, argv, {"out", "sweep"}, {}, kHelp, &flags, /*allow_positional=*/true))
    return *exit_code;
  const bool sweep = flags.Has("sweep");
  if (sweep && !flags.positional.empty()) {
    std::fprintf(stderr,
                 "plot: give either RUN_DIR... or --sweep SWEEP_DIR, not both (got %s and --sweep %s)\n%s",
                 flags.positional.front().c_str(), flags.Get("sweep").c_str(), kHelp);
    return 2;
  }
  if (sweep && flags.Get("sweep").empty()) {
    std::fprintf(stderr, "plot: --sweep needs a directory (the --out folder of `nats sweep`)\n%s", kHelp);
    return 2;
  }
  if (!sweep && flags.positional.empty()) {
    std::fprintf(stderr, "plot: give at least one RUN_DIR (a train.run_dir, e.g. runs/tiny)\n%s", kHelp);
    return 2;
  }
  // Debian's interpreter has python3-matplotlib (launch/install_deps.sh); NATS_PYTHON / NATS_PLOT_SCRIPT /
  // NATS_PLOT_SCALING_SCRIPT override them, e.g. for an installed copy of the scripts.
  const char* python = std::getenv("NATS_PYTHON") ? std::getenv("NATS_PYTHON") : "/usr/bin/python3";
  const char* variable = sweep ? "NATS_PLOT_SCALING_SCRIPT" : "NATS_PLOT_SCRIPT";
  const char* script = std::getenv(variable) ? std::getenv(variable)
                       : sweep               ? NATS_PLOT_SCALING_SCRIPT
                                             : NATS_PLOT_SCRIPT;
  if (access(script, R_OK) != 0) {
    std::fprintf(stderr, "plot: %s: cannot read the plotting script (%s); set %s to launch/%s\n", script,
                 std::strerror(errno), variable, sweep ? "plot_scaling.py" : "plot_runs.py");
    return 1;
  }
  std::vector<std::string> words = {python, script};
  if (flags.Has("out")) words.insert(words.end(), {"--out", flags.Get("out")});
  // "--" keeps a directory that starts with '-' from reading as a flag of the script.
  words.push_back("--");
  if (sweep) {
    words.push_back(flags.Get("sweep"));
  } else {
    words.insert(words.end(), flags.positional.begin(), flags.positional.end());
  }
  std::vector<char*> args;
  for (std::string& word : words) args.push_back(word.data());
  args.push_back(nullptr);
  execv(python, args.data());
  std::fprintf(
      stderr,
      "plot: cannot run %s (%s); install python3-matplotlib (launch/install_deps.sh) or set NATS_PYTHON\n",
      python, std::strerror(errno));
  return 1;
}

}  // namespace nats::launch
