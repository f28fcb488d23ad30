// parallel/communicator.h
//
// The one interface through which the rest of the trainer talks to other ranks (docs/architecture.md section
// 5, parallel/). Implementations: LocalCommunicator (size 1, no MPI), MpiCommunicator (CPU tensors) and
// NcclCommunicator (CUDA tensors, built only with CUDA + NCCL).
//
// Contract shared by every implementation:
//  - Every rank of a communicator calls the same collectives in the same order with matching shapes and
//    dtypes (the usual MPI rule). Violations that can be detected cheaply come back as Status.
//  - Tensors must be contiguous and live on the implementation's device. Dtypes: float32, float64, int32,
//    int64, uint8 everywhere; other dtypes only where nothing is reduced (gather, broadcast, send).
//  - Every call is bounded by timeout(). A collective that does not complete in time means a partner
//    rank is gone, stopped or out of step, and the communicator is unusable. What happens then is
//    abort_on_timeout(): true (the default, what `nats train` runs with) prints one line to stderr
//    naming the rank, the collective, the time waited and parallel.timeout_s, then ends the whole job
//    with MPI_Abort(MPI_COMM_WORLD, kTimeoutExitCode); a clean exit is impossible then, because
//    MPI_Finalize would wait for the missing rank forever. false (unit tests) returns
//    DeadlineExceededError with the same message instead; report and exit, do not retry.
//  - kAvg divides the sum by size(); it is defined for floating dtypes only.
//  - Variable-size calls (AllGatherV, AllToAllV) concatenate along the FIRST dimension: every piece has
//    shape [n_i, rest...] with the same `rest` and dtype on all ranks; n_i may be 0. A 1-D tensor is
//    the flat special case.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace nats::parallel {

enum class ReduceOp { kSum = 0, kAvg = 1, kMax = 2, kMin = 3 };

std::string_view ReduceOpName(ReduceOp op);

// Handle of an asynchronous operation. The tensors passed to the call that created it must stay alive
// and untouched until Wait() returns (the Work keeps references so they are not freed early).
class Work {
 public:
  virtual ~Work() = default;
  // Drives progress without blocking; true once the operation finished (successfully or not).
  // MPI progresses non-blocking collectives only inside MPI calls, so callers that want overlap poll.
  virtual bool Poll() = 0;
  // Blocks until completion or the communicator's timeout; then the result tensors are valid.
  virtual absl::Status Wait() = 0;
};

// A Work that is already complete (local communicator, empty operations, early errors).
class CompletedWork : public Work {
 public:
  explicit CompletedWork(absl::Status status = absl::OkStatus()) : status_(std::move(status)) {}
  bool Poll() override { return true; }
  absl::Status Wait() override { return status_; }

 private:
  absl::Status status_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "local", "mpi" or "nccl"; for logs.
  virtual std::string_view backend() const = 0;

  absl::Duration timeout() const { return timeout_; }
  void set_timeout(absl::Duration timeout) { timeout_ = timeout; }
  // See the header comment. Children made by Split inherit both settings.
  bool abort_on_timeout() const { return abort_on_timeout_; }
  void set_abort_on_timeout(bool abort) { abort_on_timeout_ = abort; }

  // In place on every rank.
  virtual absl::Status AllReduce(at::Tensor& t, ReduceOp op) = 0;
  virtual std::unique_ptr<Work> AllReduceAsync(at::Tensor& t, ReduceOp op) = 0;

  // All inputs have the same numel; `out` (preallocated, numel = size() * in.numel(), same dtype) holds
  // rank r's input at [r * in.numel(), (r + 1) * in.numel()) in flat order.
  virtual absl::Status AllGather(const at::Tensor& in, at::Tensor& out) = 0;

  // First-dimension concatenation semantics (see the header comment); (*out)[r] is rank r's input,
  // freshly allocated with shape [n_r, rest...]. Every rank returns the same error when the row shapes
  // or dtypes disagree.
  virtual absl::Status AllGatherV(const at::Tensor& in, std::vector<at::Tensor>* out) = 0;

  // in.numel() == size() * out.numel() (callers pad). Rank r receives reduce(in[r*n : (r+1)*n]).
  virtual absl::Status ReduceScatter(const at::Tensor& in, at::Tensor& out, ReduceOp op) = 0;
  virtual std::unique_ptr<Work> ReduceScatterAsync(const at::Tensor& in, at::Tensor& out, ReduceOp op) = 0;

  // t is overwritten on every rank except `root`.
  virtual absl::Status Broadcast(at::Tensor& t, int root) = 0;

  // Point to point. The receiver preallocates `t` with the sender's numel and dtype.
  virtual absl::Status Send(const at::Tensor& t, int peer, int tag) = 0;
  virtual absl::Status Recv(at::Tensor& t, int peer, int tag) = 0;

  // send.size() == size(); send[r] goes to rank r. (*recv)[r] is what rank r sent here, shape
  // [n, rest...] with the common `rest` (first-dimension semantics, as AllGatherV).
  virtual absl::Status AllToAllV(const std::vector<at::Tensor>& send, std::vector<at::Tensor>* recv) = 0;

  virtual absl::Status Barrier() = 0;

  // MPI_Comm_split semantics: ranks with the same color form a new communicator, ordered by (key, old
  // rank). The child inherits timeout() and abort_on_timeout(). Collective over this communicator.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) = 0;

 protected:
  // Ten minutes: long enough for a slow checkpoint on another rank, short enough to free a dead job.
  absl::Duration timeout_ = absl::Minutes(10);
  bool abort_on_timeout_ = true;
};

// The exit code of a job ended by a collective timeout (MPI_Abort's error code; mpirun returns it).
inline constexpr int kTimeoutExitCode = 3;

enum class Backend { kAuto = 0, kLocal = 1, kMpi = 2, kNccl = 3 };

// "auto", "local", "mpi", "nccl" (the spelling of config field parallel.backend).
absl::StatusOr<Backend> ParseBackend(std::string_view name);

// True when this process was started by an MPI launcher (mpirun/mpiexec/srun with PMI): one of
// OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_SIZE, PMI_RANK, MV2_COMM_WORLD_SIZE, MPI_LOCALNRANKS is set.
bool LaunchedByMpi();

// The world communicator for `backend`.
//  kAuto:  under LaunchedByMpi(), NCCL when `cuda_device` is given and the build has NCCL, else MPI;
//          otherwise LocalCommunicator. A plain `nats train` therefore never initialises MPI (no
//          singleton start-up cost, works where MPI is broken); `mpirun -np 1` gives a world of size 1.
//  kLocal: LocalCommunicator, even under mpirun (every rank then trains alone).
//  kMpi:   initialises MPI (InitMpi, also as a singleton without mpirun) and wraps MPI_COMM_WORLD.
//  kNccl:  MPI world for bootstrap, then one NCCL communicator on CUDA device `cuda_device` (default: the
//          local rank on the node). Unimplemented when the build has no NCCL.
// `cuda_device`: the CUDA device of this rank's tensors (runtime/device_placement.h), none for a CPU run.
absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(Backend backend,
                                                               std::optional<int> cuda_device = std::nullopt);
inline absl::StatusOr<std::unique_ptr<Communicator>> MakeWorldCommunicator() {
  return MakeCommunicator(Backend::kAuto);
}

// Argument checks shared by the implementations (exposed for them, not for callers). Debian's Abseil
// has its own absl::string_view (not std::string_view), hence the type here.
namespace internal {
// OK when t is contiguous, on the expected device and of a supported dtype (`reduce`: the five
// reducible dtypes; otherwise any dtype). `what` names the call for the message.
absl::Status CheckTensor(const at::Tensor& t, absl::string_view what, bool reduce, bool cuda);
absl::Status CheckReduceOp(const at::Tensor& t, ReduceOp op, absl::string_view what);

// The timeout message every implementation uses, e.g. "MPI AllReduce sum (4 x float) did not complete
// within 20s on rank 0 of 2 (waited 20.0 s): another rank is missing, stopped, crashed or called a
// different collective; ... raise parallel.timeout_s if a rank is legitimately slow".
std::string TimeoutMessage(absl::string_view what, absl::Duration timeout, absl::Duration waited, int rank,
                           int size, absl::string_view consequence);

// The timeout policy (see the header comment): with `abort` prints "nats: <message>; aborting the job"
// to stderr and calls MPI_Abort(MPI_COMM_WORLD, kTimeoutExitCode) (std::_Exit where MPI is not
// initialised); never returns then. Otherwise returns DeadlineExceededError(message).
absl::Status HandleTimeout(bool abort, const std::string& message);
}  // namespace internal

}  // namespace nats::parallel
