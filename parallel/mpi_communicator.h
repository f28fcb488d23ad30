// parallel/mpi_communicator.h
//
// The MPI communicator for CPU tensors (the process runtime, InitMpi / FinalizeMpi: parallel/mpi_runtime.h).
// Built only with MPI (NATS_WITH_MPI, the default).
//
// MpiCommunicator implements every call with non-blocking MPI (MPI_Iallreduce, MPI_Ibarrier, ...) and
// polls MPI_Test until timeout(), so nothing hangs silently (what a timeout does: communicator.h). A rank
// waiting in a call also exits when its launcher (mpirun / orted, the parent process recorded by InitMpi) is
// gone: after an MPI_Abort elsewhere Open MPI only sends SIGTERM, which the trainer treats as "stop after
// this step", so the rank would otherwise linger in its collective until its own timeout. Counts above
// INT_MAX elements are split into chunks for AllReduce, Broadcast, Send and Recv; the other calls return
// InvalidArgument beyond that.
#pragma once

#include <mpi.h>

#include "parallel/communicator.h"
#include "parallel/mpi_runtime.h"

namespace nats::parallel {

class MpiCommunicator : public Communicator {
 public:
  // A duplicate of MPI_COMM_WORLD (so our messages never match another library's); calls InitMpi.
  static absl::StatusOr<std::unique_ptr<MpiCommunicator>> World();

  // Adopts `comm`; it is freed in the destructor (unless MPI is already finalized).
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  MPI_Comm comm() const { return comm_; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "mpi"; }

  absl::Status AllReduce(at::Tensor& t, ReduceOp op) override;
  std::unique_ptr<Work> AllReduceAsync(at::Tensor& t, ReduceOp op) override;
  absl::Status AllGather(const at::Tensor& in, at::Tensor& out) override;
  std::unique_ptr<Work> AllGatherAsync(const at::Tensor& in, at::Tensor& out);
  absl::Status AllGatherV(const at::Tensor& in, std::vector<at::Tensor>* out) override;
  absl::Status ReduceScatter(const at::Tensor& in, at::Tensor& out, ReduceOp op) override;
  std::unique_ptr<Work> ReduceScatterAsync(const at::Tensor& in, at::Tensor& out, ReduceOp op) override;
  absl::Status Broadcast(at::Tensor& t, int root) override;
  absl::Status Send(const at::Tensor& t, int peer, int tag) override;
  absl::Status Recv(at::Tensor& t, int peer, int tag) override;
  absl::Status AllToAllV(const std::vector<at::Tensor>& send, std::vector<at::Tensor>* recv) override;
  absl::Status Barrier() override;
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;

  // Ranks on this node (MPI_COMM_TYPE_SHARED): the CUDA device index for one process per GPU.
  absl::StatusOr<int> LocalRank();

 private:
  // Allgathers per-rank row metadata of a variable-size call and checks that every rank agrees on the
  // row shape and dtype; returns the same error on every rank otherwise.
  absl::StatusOr<std::vector<int64_t>> ExchangeRows(const at::Tensor& like, int64_t rows,
                                                    absl::string_view what);

  // Send (send = true) or Recv of `t` with `peer`, in chunks MPI's int counts can address.
  absl::Status PointToPoint(at::Tensor& t, int peer, int tag, bool send);

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace nats::parallel
