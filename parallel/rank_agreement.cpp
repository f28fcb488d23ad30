#include "parallel/rank_agreement.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace nats::parallel {

absl::Status CheckRanksAgree(Communicator& comm, std::string_view what, uint64_t value) {
  at::Tensor mine = at::empty({1}, at::kLong);
  mine.data_ptr<int64_t>()[0] = static_cast<int64_t>(value);
  at::Tensor all = at::empty({comm.size()}, at::kLong);
  if (comm.backend() == "nccl") {
    // NCCL moves only device memory; the values are tiny, the round trip is irrelevant at start-up.
    at::Tensor mine_dev = mine.to(at::kCUDA);
    at::Tensor all_dev = all.to(at::kCUDA);
    if (auto s = comm.AllGather(mine_dev, all_dev); !s.ok()) return s;
    all = all_dev.cpu();
  } else if (auto s = comm.AllGather(mine, all); !s.ok()) {
    return s;
  }
  const auto* v = all.data_ptr<int64_t>();
  int first = -1, differing = 0;
  for (int r = 1; r < comm.size(); ++r) {
    if (v[r] != v[0]) {
      if (first < 0) first = r;
      ++differing;
    }
  }
  if (first < 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "ranks disagree on ", std::string(what), ": rank ", first, " has ", static_cast<uint64_t>(v[first]), ", rank 0 has ",
      static_cast<uint64_t>(v[0]), " (", differing, " of ", comm.size(),
      " ranks differ from rank 0); every rank must use the same config, model and data"));
}

uint64_t Fingerprint(std::string_view bytes) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace nats::parallel
