// parallel/mpi_runtime.h
//
// The MPI process runtime, without MPI's headers (so the trainer's command line and the tests include it in
// any build). InitMpi()/FinalizeMpi() (or the RAII MpiRuntime) bracket MPI use in a process:
//  - InitMpi is idempotent and thread safe; it requests MPI_THREAD_MULTIPLE (hooks may call MPI from
//    an autograd worker thread) and accepts what the library provides (MpiThreadLevel()).
//  - If somebody else already initialised MPI, InitMpi adopts it and FinalizeMpi leaves it alone.
//  - Without mpirun, Open MPI starts as a singleton world of size 1; that works, but MakeWorldCommunicator
//    (communicator.h) avoids it by choosing LocalCommunicator there.
// In a build without MPI (-DNATS_WITH_MPI=OFF, e.g. a single-GPU build: parallel/mpi_runtime_none.cpp)
// InitMpi returns Unimplemented, FinalizeMpi does nothing and AbortMpiJob is std::_Exit.
#pragma once

#include "absl/status/status.h"

namespace nats::parallel {

// True when this build has the MPI communicator.
bool BuiltWithMpi();

absl::Status InitMpi();
// Finalizes MPI if InitMpi initialised it; free every MpiCommunicator first.
void FinalizeMpi();
// The thread level MPI granted (MPI_THREAD_*); -1 before InitMpi.
int MpiThreadLevel();
// Ends the whole job: MPI_Abort(MPI_COMM_WORLD, code) when MPI is initialised and not finalized (mpirun
// then kills every rank, stopped ones included, and exits with `code`), std::_Exit(code) otherwise.
[[noreturn]] void AbortMpiJob(int code);

class MpiRuntime {
 public:
  MpiRuntime() : status_(InitMpi()) {}
  ~MpiRuntime() { FinalizeMpi(); }
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;
  const absl::Status& status() const { return status_; }

 private:
  absl::Status status_;
};

}  // namespace nats::parallel
