// `nats plot RUN_DIR... [--out DIR]`: figures of runs (launch/plot_runs.py, matplotlib from Debian). The
// plotting lives in Python because matplotlib is the well-kept library for it; this command only finds the
// script and the interpreter and hands over the arguments. The flags are parsed here, like every other
// command's (launch/flag_parser.h), and handed over in one spelling, so `--out=DIR` and `--out DIR` both work
// and --help needs no Python.
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

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats plot RUN_DIR... [--out DIR]\n"
    "  PNG + SVG figures of training runs from their <run_dir>/metrics.jsonl (launch/plot_runs.py):\n"
    "  loss.png (training and validation loss, one colour per run) and, for NAtS runs, nats_<run>.png\n"
    "  (per layer: global / local / sliding fractions and the KV fraction against step)\n"
    "  RUN_DIR     train.run_dir of one or more runs\n"
    "  --out DIR   output folder (default: <first RUN_DIR>/plots)\n"
    "Environment: NATS_PYTHON (default /usr/bin/python3, needs python3-matplotlib), NATS_PLOT_SCRIPT.\n";

}  // namespace

int RunPlot(int argc, char** argv) {
  ParsedFlags flags;
  if (auto exit_code = ParseCommandFlags(argc, argv, {"out"}, {}, kHelp, &flags, /*allow_positional=*/true))
    return *exit_code;
  if (flags.positional.empty()) {
    std::fprintf(stderr, "plot: give at least one RUN_DIR (a train.run_dir, e.g. runs/tiny)\n%s", kHelp);
    return 2;
  }
  // Debian's interpreter has python3-matplotlib (launch/install_deps.sh); NATS_PYTHON / NATS_PLOT_SCRIPT
  // override both, e.g. for an installed copy of the script.
  const char* python = std::getenv("NATS_PYTHON") ? std::getenv("NATS_PYTHON") : "/usr/bin/python3";
  const char* script = std::getenv("NATS_PLOT_SCRIPT") ? std::getenv("NATS_PLOT_SCRIPT") : NATS_PLOT_SCRIPT;
  if (access(script, R_OK) != 0) {
    std::fprintf(
        stderr,
        "plot: %s: cannot read the plotting script (%s); set NATS_PLOT_SCRIPT to launch/plot_runs.py\n",
        script, std::strerror(errno));
    return 1;
  }
  std::vector<std::string> words = {python, script};
  if (flags.Has("out")) words.insert(words.end(), {"--out", flags.Get("out")});
  // "--" keeps a run directory that starts with '-' from reading as a flag of the script.
  words.push_back("--");
  words.insert(words.end(), flags.positional.begin(), flags.positional.end());
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
