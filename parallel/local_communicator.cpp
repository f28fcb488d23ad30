#include "parallel/local_communicator.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace nats::parallel {
namespace {

bool IsCuda(const at::Tensor& t) { return t.defined() && t.is_cuda(); }

}  // namespace

absl::Status LocalCommunicator::AllReduce(at::Tensor& t, ReduceOp op) {
  if (auto s = internal::CheckTensor(t, "AllReduce", /*reduce=*/true, IsCuda(t)); !s.ok()) return s;
  return internal::CheckReduceOp(t, op, "AllReduce");
}

std::unique_ptr<Work> LocalCommunicator::AllReduceAsync(at::Tensor& t, ReduceOp op) {
  return std::make_unique<CompletedWork>(AllReduce(t, op));
}

absl::Status LocalCommunicator::AllGather(const at::Tensor& in, at::Tensor& out) {
  if (auto s = internal::CheckTensor(in, "AllGather input", false, IsCuda(in)); !s.ok()) return s;
  if (auto s = internal::CheckTensor(out, "AllGather output", false, IsCuda(in)); !s.ok()) return s;
  if (out.numel() != in.numel() || out.scalar_type() != in.scalar_type()) {
    return absl::InvalidArgumentError(absl::StrCat("AllGather: output must have size() * ", in.numel(),
                                                   " elements of the input dtype, got ", out.numel()));
  }
  out.view(-1).copy_(in.reshape(-1));
  return absl::OkStatus();
}

absl::Status LocalCommunicator::AllGatherV(const at::Tensor& in, std::vector<at::Tensor>* out) {
  if (auto s = internal::CheckTensor(in, "AllGatherV", false, IsCuda(in)); !s.ok()) return s;
  if (in.dim() == 0) return absl::InvalidArgumentError("AllGatherV: input must have at least 1 dimension");
  out->assign(1, in.clone());
  return absl::OkStatus();
}

absl::Status LocalCommunicator::ReduceScatter(const at::Tensor& in, at::Tensor& out, ReduceOp op) {
  if (auto s = internal::CheckTensor(in, "ReduceScatter input", true, IsCuda(in)); !s.ok()) return s;
  if (auto s = internal::CheckTensor(out, "ReduceScatter output", true, IsCuda(in)); !s.ok()) return s;
  if (auto s = internal::CheckReduceOp(in, op, "ReduceScatter"); !s.ok()) return s;
  if (out.numel() != in.numel() || out.scalar_type() != in.scalar_type()) {
    return absl::InvalidArgumentError(absl::StrCat("ReduceScatter: input numel ", in.numel(),
                                                   " must equal size() * output numel ", out.numel()));
  }
  out.view(-1).copy_(in.reshape(-1));
  return absl::OkStatus();
}

std::unique_ptr<Work> LocalCommunicator::ReduceScatterAsync(const at::Tensor& in, at::Tensor& out,
                                                            ReduceOp op) {
  return std::make_unique<CompletedWork>(ReduceScatter(in, out, op));
}

absl::Status LocalCommunicator::Broadcast(at::Tensor& t, int root) {
  if (auto s = internal::CheckTensor(t, "Broadcast", false, IsCuda(t)); !s.ok()) return s;
  if (root != 0) return absl::InvalidArgumentError(absl::StrCat("Broadcast: root ", root, " out of [0, 1)"));
  return absl::OkStatus();
}

absl::Status LocalCommunicator::Send(const at::Tensor&, int peer, int) {
  return absl::InvalidArgumentError(
      absl::StrCat("Send: peer ", peer, " does not exist in a local (size 1) world"));
}

absl::Status LocalCommunicator::Recv(at::Tensor&, int peer, int) {
  return absl::InvalidArgumentError(
      absl::StrCat("Recv: peer ", peer, " does not exist in a local (size 1) world"));
}

absl::Status LocalCommunicator::AllToAllV(const std::vector<at::Tensor>& send,
                                          std::vector<at::Tensor>* recv) {
  if (send.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllToAllV: need one tensor per rank (1), got ", send.size()));
  }
  if (auto s = internal::CheckTensor(send[0], "AllToAllV", false, IsCuda(send[0])); !s.ok()) return s;
  if (send[0].dim() == 0)
    return absl::InvalidArgumentError("AllToAllV: tensors must have at least 1 dimension");
  recv->assign(1, send[0].clone());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> LocalCommunicator::Split(int, int) {
  auto child = std::make_unique<LocalCommunicator>();
  child->set_timeout(timeout());
  child->set_abort_on_timeout(abort_on_timeout());
  return std::unique_ptr<Communicator>(std::move(child));
}

}  // namespace nats::parallel
