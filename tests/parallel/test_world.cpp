#include "tests/parallel/test_world.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>

#include "absl/time/time.h"
#include "parallel/mpi_runtime.h"

namespace nats::parallel::testing {
namespace {

std::unique_ptr<Communicator>& WorldSlot() {
  static auto* slot = new std::unique_ptr<Communicator>();
  return *slot;
}

class WorldEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    WorldSlot().reset();
    FinalizeMpi();
  }
};

const auto* const kRegistered = ::testing::AddGlobalTestEnvironment(new WorldEnvironment());

}  // namespace

Communicator& World() {
  auto& slot = WorldSlot();
  if (!slot) {
    auto world = MakeWorldCommunicator();
    TORCH_CHECK(world.ok(), "test world: ", world.status().ToString());
    slot = std::move(*world);
    slot->set_timeout(absl::Seconds(30));
    // Tests inspect the DeadlineExceeded Status; `nats train` keeps the default (abort the job).
    slot->set_abort_on_timeout(false);
  }
  return *slot;
}

at::Tensor RandomTensor(uint64_t seed, at::IntArrayRef shape, at::ScalarType dtype) {
  auto gen = at::detail::createCPUGenerator(seed);
  if (at::isFloatingType(dtype)) return at::randn(shape, gen, at::TensorOptions(dtype));
  // Small magnitudes: sums over 4 ranks stay in range for uint8 and exact for every integer type.
  const int64_t low = dtype == at::kByte ? 0 : -50;
  return at::randint(low, 50, shape, gen, at::TensorOptions(dtype));
}

}  // namespace nats::parallel::testing
