#include "parallel/rank_agreement.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nats::parallel {
namespace {

constexpr int64_t kMaxMessageBytes = 4096;

// AllGather for host tensors over any backend: NCCL moves device memory only (tiny values at start-up, so
// the round trip does not matter).
absl::Status HostAllGather(Communicator& comm, const at::Tensor& in, at::Tensor& out) {
  if (comm.backend() != "nccl") return comm.AllGather(in, out);
  at::Tensor in_dev = in.to(at::kCUDA);
  at::Tensor out_dev = out.to(at::kCUDA);
  if (absl::Status s = comm.AllGather(in_dev, out_dev); !s.ok()) return s;
  out.copy_(out_dev.cpu());
  return absl::OkStatus();
}

absl::Status HostAllGatherV(Communicator& comm, const at::Tensor& in, std::vector<at::Tensor>* out) {
  if (comm.backend() != "nccl") return comm.AllGatherV(in, out);
  if (absl::Status s = comm.AllGatherV(in.to(at::kCUDA), out); !s.ok()) return s;
  for (at::Tensor& t : *out) t = t.cpu();
  return absl::OkStatus();
}

}  // namespace

absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& mine) {
  if (comm.size() == 1) return mine;
  // Round 1: every rank's status code (0 = OK). Round 2, only when some rank failed: the messages.
  at::Tensor code = at::empty({1}, at::kLong);
  code.data_ptr<int64_t>()[0] = static_cast<int64_t>(mine.code());
  at::Tensor codes = at::empty({comm.size()}, at::kLong);
  if (absl::Status s = HostAllGather(comm, code, codes); !s.ok()) return s;
  std::vector<int> failed;
  for (int r = 0; r < comm.size(); ++r) {
    if (codes.data_ptr<int64_t>()[r] != 0) failed.push_back(r);
  }
  if (failed.empty()) return absl::OkStatus();

  const std::string text(mine.message().substr(0, kMaxMessageBytes));
  at::Tensor bytes = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
  if (!text.empty()) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  std::vector<at::Tensor> messages;
  if (absl::Status s = HostAllGatherV(comm, bytes, &messages); !s.ok()) return s;
  const int first = failed.front();
  const at::Tensor& m = messages[first];
  const std::string first_message(reinterpret_cast<const char*>(m.data_ptr()), m.numel());
  const auto first_code = static_cast<absl::StatusCode>(codes.data_ptr<int64_t>()[first]);
  std::string prefix;
  if (failed.size() == 1) {
    prefix = absl::StrCat("rank ", first, " of ", comm.size(), " failed: ");
  } else {
    std::vector<int> shown(failed.begin(), failed.begin() + std::min<size_t>(failed.size(), 16));
    prefix = absl::StrCat("ranks ", absl::StrJoin(shown, ", "), failed.size() > shown.size() ? ", ..." : "",
                          " of ", comm.size(), " failed; rank ", first, ": ");
  }
  return absl::Status(first_code, absl::StrCat(prefix, first_message));
}

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
      "ranks disagree on ", std::string(what), ": rank ", first, " has ", static_cast<uint64_t>(v[first]),
      ", rank 0 has ", static_cast<uint64_t>(v[0]), " (", differing, " of ", comm.size(),
      " ranks differ from rank 0); every rank must use the same config, model and data"));
}

}  // namespace nats::parallel
