// `nats plot RUN_DIR... [--out DIR]`: figures of runs (launch/plot_runs.py, matplotlib from Debian). The
// plotting lives in Python because matplotlib is the well-kept library for it; this command only finds the
// script and the interpreter and hands over the arguments.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "launch/commands.h"

#ifndef NATS_PLOT_SCRIPT
#define NATS_PLOT_SCRIPT "launch/plot_runs.py"
#endif

namespace nats::launch {

int RunPlot(int argc, char** argv) {
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
  std::vector<char*> args = {const_cast<char*>(python), const_cast<char*>(script)};
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  execv(python, args.data());
  std::fprintf(
      stderr,
      "plot: cannot run %s (%s); install python3-matplotlib (launch/install_deps.sh) or set NATS_PYTHON\n",
      python, std::strerror(errno));
  return 1;
}

}  // namespace nats::launch
