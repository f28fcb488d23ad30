#include "tests/checkpoints/test_state.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>

#include "absl/strings/str_cat.h"

namespace nats::checkpoint_testing {

std::string SharedTempDir(parallel::Communicator& comm, const std::string& name) {
  at::Tensor pid = at::zeros({1}, at::kLong);
  if (comm.rank() == 0) pid.data_ptr<int64_t>()[0] = ::getpid();
  TORCH_CHECK(comm.Broadcast(pid, 0).ok(), "broadcast of the temp dir id failed");
  const char* tmp = std::getenv("TMPDIR");
  const std::string dir = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/nats_ckpt_", name,
                                       "_", pid.data_ptr<int64_t>()[0]);
  if (comm.rank() == 0) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  TORCH_CHECK(comm.Barrier().ok(), "barrier failed");
  return dir;
}

void RemoveSharedDir(parallel::Communicator& comm, const std::string& dir) {
  TORCH_CHECK(comm.Barrier().ok(), "barrier failed");
  if (comm.rank() == 0) std::filesystem::remove_all(dir);
}

std::vector<GlobalSpec> Specs() {
  return {
      {"model/wte", {50, 16}, at::kFloat, Layout::kReplicated},
      {"model/big", {2600000}, at::kFloat, Layout::kReplicated},  // 10.4 MB > 8 MiB: split between writers
      {"model/scale", {3, 3}, at::kDouble, Layout::kReplicated},
      {"model/half", {17, 5}, at::kBFloat16, Layout::kReplicated},
      {"optim/wte.exp_avg", {50, 16}, at::kFloat, Layout::kSharded},
      {"optim/wte.exp_avg_sq", {50, 16}, at::kDouble, Layout::kOverlapping},
      {"data/order", {1001}, at::kLong, Layout::kSharded},
      {"data/mask", {333}, at::kByte, Layout::kOverlapping},
      {"optim/step", {1}, at::kLong, Layout::kReplicated},
      {"extra/last_only", {13, 7}, at::kLong, Layout::kLastRankOnly},
      {"extra/empty", {0, 4}, at::kFloat, Layout::kReplicated},
  };
}

at::Tensor SeededTensor(uint64_t seed, at::IntArrayRef shape, at::ScalarType dtype) {
  auto gen = at::detail::createCPUGenerator(seed);
  if (at::isFloatingType(dtype)) return at::randn(shape, gen, at::TensorOptions(at::kFloat)).to(dtype);
  const int64_t high = dtype == at::kByte ? 256 : (int64_t{1} << 40);
  return at::randint(0, high, shape, gen, at::TensorOptions(at::kLong)).to(dtype);
}

at::Tensor GlobalValue(const GlobalSpec& spec) {
  return SeededTensor(std::hash<std::string>()(spec.name) % 1000003, spec.shape, spec.dtype);
}

std::pair<int64_t, int64_t> HeldRange(const GlobalSpec& spec, int rank, int size) {
  int64_t n = 1;
  for (int64_t d : spec.shape) n *= d;
  const int64_t per = (n + size - 1) / size;
  switch (spec.layout) {
    case Layout::kReplicated:
      return {0, n};
    case Layout::kSharded:
      return {std::min(n, rank * per), std::min(n, (rank + 1) * per)};
    case Layout::kOverlapping:
      return {std::max<int64_t>(0, std::min(n, rank * per - 3)), std::min(n, (rank + 1) * per + 3)};
    case Layout::kLastRankOnly:
      return rank == size - 1 ? std::make_pair(int64_t{0}, n) : std::make_pair(n, n);
  }
  return {0, 0};
}

std::vector<StateTensor> SyntheticState(int rank, int size) {
  std::vector<StateTensor> state;
  for (const GlobalSpec& spec : Specs()) {
    auto [lo, hi] = HeldRange(spec, rank, size);
    if (hi <= lo && !(spec.layout == Layout::kReplicated)) continue;
    at::Tensor flat = GlobalValue(spec).reshape({-1});
    state.push_back(StateTensor{spec.name, flat.narrow(0, lo, hi - lo).clone(), spec.shape, lo});
  }
  return state;
}

void FlipBit(const std::string& path, uint64_t offset) {
  const int fd = ::open(path.c_str(), O_RDWR);
  TORCH_CHECK(fd >= 0, "cannot open ", path);
  unsigned char byte = 0;
  TORCH_CHECK(::pread(fd, &byte, 1, static_cast<off_t>(offset)) == 1, "cannot read ", path);
  byte ^= 0x10;
  TORCH_CHECK(::pwrite(fd, &byte, 1, static_cast<off_t>(offset)) == 1, "cannot write ", path);
  ::close(fd);
}

void Truncate(const std::string& path, uint64_t size) {
  TORCH_CHECK(::truncate(path.c_str(), static_cast<off_t>(size)) == 0, "cannot truncate ", path);
}

}  // namespace nats::checkpoint_testing
