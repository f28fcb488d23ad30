// Placeholder until `nats fit` lands (issue 12).
#include <cstdio>

#include "launch/commands.h"

namespace nats::launch {

int RunFit(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "fit: not built yet\n");
  return 1;
}

}  // namespace nats::launch
