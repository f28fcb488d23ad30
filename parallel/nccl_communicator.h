// parallel/nccl_communicator.h
//
// NCCL communicator for CUDA tensors (one process per GPU). A host communicator (MPI) bootstraps it: rank 0
// creates the ncclUniqueId and broadcasts it through `bootstrap`, which the NCCL communicator keeps for Split
// (a new id per child group), for Barrier and for the AllGatherV/AllToAllV metadata.
//
// Collectives run on the communicator's own CUDA stream, which first waits on the caller's current
// stream (so inputs written by earlier kernels are visible); Wait()/blocking calls make the caller's
// stream wait on the NCCL stream and then poll the stream's completion with the timeout, calling
// ncclCommAbort when it expires (a hung NCCL kernel never returns otherwise).
//
// CPU tensors passed to any collective go through the MPI bootstrap instead, so callers mix host
// metadata (loss sums, stop flags, checkpoint reports) and device payloads on one communicator.
//
// Only compiled when CUDA and NCCL are found (NATS_HAVE_NCCL); elsewhere the factory returns
// UnimplementedError. This header carries no CUDA or NCCL types so it can be included everywhere.
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace nats::parallel {

// `bootstrap`: a communicator of CPU tensors over the same ranks (MPI; a LocalCommunicator for one process in
// a build without MPI). `device`: this rank's CUDA device (runtime/device_placement.h).
absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(std::unique_ptr<Communicator> bootstrap,
                                                                   int device);

}  // namespace nats::parallel
