// parallel/local_communicator.h
//
// A communicator of size 1 that never touches MPI: the default for single-process runs and for unit
// tests of code that takes a Communicator. Every collective is the identity (AllGather/AllGatherV/
// AllToAllV copy, kAvg divides by 1); arguments are checked exactly as the MPI backend checks them so
// that shape bugs show up in single-process tests too. Works for CPU and CUDA tensors.
#pragma once

#include "parallel/communicator.h"

namespace nats::parallel {

class LocalCommunicator : public Communicator {
 public:
  LocalCommunicator() = default;

  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string_view backend() const override { return "local"; }

  absl::Status AllReduce(at::Tensor& t, ReduceOp op) override;
  std::unique_ptr<Work> AllReduceAsync(at::Tensor& t, ReduceOp op) override;
  absl::Status AllGather(const at::Tensor& in, at::Tensor& out) override;
  absl::Status AllGatherV(const at::Tensor& in, std::vector<at::Tensor>* out) override;
  absl::Status ReduceScatter(const at::Tensor& in, at::Tensor& out, ReduceOp op) override;
  std::unique_ptr<Work> ReduceScatterAsync(const at::Tensor& in, at::Tensor& out, ReduceOp op) override;
  absl::Status Broadcast(at::Tensor& t, int root) override;
  // There is no peer in a world of one: both return InvalidArgument.
  absl::Status Send(const at::Tensor& t, int peer, int tag) override;
  absl::Status Recv(at::Tensor& t, int peer, int tag) override;
  absl::Status AllToAllV(const std::vector<at::Tensor>& send, std::vector<at::Tensor>* recv) override;
  absl::Status Barrier() override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;
};

}  // namespace nats::parallel
