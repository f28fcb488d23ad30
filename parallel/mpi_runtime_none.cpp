// parallel/mpi_runtime.h for a build without MPI (-DNATS_WITH_MPI=OFF); parallel/CMakeLists.txt compiles
// this file instead of mpi_communicator.cpp there.
#include <cstdlib>

#include "parallel/mpi_runtime.h"

namespace nats::parallel {

bool BuiltWithMpi() { return false; }

absl::Status InitMpi() {
  return absl::UnimplementedError(
      "this build has no MPI (configured with -DNATS_WITH_MPI=OFF); rebuild with Open MPI installed "
      "(libopenmpi-dev) for multi-process runs, or run one process");
}

void FinalizeMpi() {}

int MpiThreadLevel() { return -1; }

void AbortMpiJob(int code) { std::_Exit(code); }  // without MPI this process is the whole job

}  // namespace nats::parallel
