// tests/parallel/test_world.h
//
// The world communicator of a parallel/ test binary. Under mpirun it is an MpiCommunicator over all
// ranks, run plainly it is a LocalCommunicator (MakeWorldCommunicator's rule), so every binary tests
// both. A GoogleTest environment finalizes MPI after the last test. The timeout is short so that a rank
// that fails an ASSERT mid-sequence turns its peers' next collective into an error, not a hang; it returns
// DeadlineExceeded (abort_on_timeout is off) so that tests can check the Status.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "parallel/communicator.h"

namespace nats::parallel::testing {

Communicator& World();

// Deterministic random tensors: identical on every rank for the same seed.
at::Tensor RandomTensor(uint64_t seed, at::IntArrayRef shape, at::ScalarType dtype);

}  // namespace nats::parallel::testing
