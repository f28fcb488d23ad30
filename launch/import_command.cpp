// `nats import`: placeholder until interop/hf_import lands.
#include <cstdio>

#include "launch/commands.h"

namespace nats::launch {

int RunImport(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "nats import: not built yet\n");
  return 2;
}

}  // namespace nats::launch
