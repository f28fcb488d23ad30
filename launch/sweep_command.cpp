// Placeholder until `nats sweep` lands (issue 12).
#include <cstdio>

#include "launch/commands.h"

namespace nats::launch {

int RunSweep(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "sweep: not built yet\n");
  return 1;
}

}  // namespace nats::launch
