// `nats export`: placeholder until interop/hf_export lands.
#include <cstdio>

#include "launch/commands.h"

namespace nats::launch {

int RunExport(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "nats export: not built yet\n");
  return 2;
}

}  // namespace nats::launch
