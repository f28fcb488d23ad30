// `nats eval`: placeholder until checkpoints exist; see RunEval below.
#include <cstdio>

#include "launch/commands.h"

namespace nats::launch {

int RunEval(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "eval: evaluating a saved model needs checkpoints, which are not built yet; "
                       "`nats train` evaluates on the validation books during and after training\n");
  return 2;
}

}  // namespace nats::launch
