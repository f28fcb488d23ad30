// Built only with CUDA + NCCL (parallel/CMakeLists.txt). Uses the CUDA runtime directly rather than
// c10/cuda so that it compiles against the CPU-only LibTorch too; the caller's stream is taken to be
// the legacy default stream (LibTorch's current stream unless the caller changed it).
#include "parallel/nccl_communicator.h"

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace nats::parallel {
namespace {

absl::Status CudaStatus(cudaError_t e, absl::string_view what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA ", what, " failed: ", cudaGetErrorString(e)));
}

absl::Status NcclStatus(ncclResult_t r, absl::string_view what) {
  if (r == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("NCCL ", what, " failed: ", ncclGetErrorString(r)));
}

// Dtype for reductions; non-reducing calls move bytes (ncclUint8, count * element size).
absl::StatusOr<ncclDataType_t> NcclType(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kInt:
      return ncclInt32;
    case at::kLong:
      return ncclInt64;
    case at::kByte:
      return ncclUint8;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("NCCL: dtype ", c10::toString(t.scalar_type()), " is not supported"));
  }
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  return ncclSum;
}

size_t Bytes(const at::Tensor& t) { return static_cast<size_t>(t.numel()) * t.element_size(); }

// A defined CPU tensor: routed to the MPI bootstrap (undefined ones reach the checks and their message).
bool IsHost(const at::Tensor& t) { return t.defined() && t.is_cpu(); }

class NcclCommunicator;

// Completion of work enqueued on the NCCL stream, observed through an event.
class NcclWork : public Work {
 public:
  NcclWork(std::string what, NcclCommunicator* comm, std::vector<at::Tensor> keep, absl::Status launch);
  ~NcclWork() override;
  bool Poll() override;
  absl::Status Wait() override;

 private:
  std::string what_;
  NcclCommunicator* comm_;
  std::vector<at::Tensor> keep_;
  absl::Status status_;
  cudaEvent_t event_ = nullptr;
  bool done_ = false;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> bootstrap, int device)
      : bootstrap_(std::move(bootstrap)), device_(device) {
    set_timeout(bootstrap_->timeout());
    set_abort_on_timeout(bootstrap_->abort_on_timeout());
  }
  ~NcclCommunicator() override {
    // Abort rather than destroy: ncclCommDestroy can block forever when a peer is gone.
    if (comm_ != nullptr) ncclCommAbort(comm_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init() {
    if (auto s = CudaStatus(cudaSetDevice(device_), "cudaSetDevice"); !s.ok()) return s;
    ncclUniqueId id;
    at::Tensor id_bytes = at::empty({static_cast<int64_t>(sizeof(id))}, at::kByte);
    if (bootstrap_->rank() == 0) {
      if (auto s = NcclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId"); !s.ok()) return s;
      std::memcpy(id_bytes.data_ptr(), &id, sizeof(id));
    }
    if (auto s = bootstrap_->Broadcast(id_bytes, 0); !s.ok()) return s;
    std::memcpy(&id, id_bytes.data_ptr(), sizeof(id));
    if (auto s = CudaStatus(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
        !s.ok()) {
      return s;
    }
    return NcclStatus(ncclCommInitRank(&comm_, bootstrap_->size(), id, bootstrap_->rank()),
                      "ncclCommInitRank");
  }

  int rank() const override { return bootstrap_->rank(); }
  int size() const override { return bootstrap_->size(); }
  std::string_view backend() const override { return "nccl"; }
  ncclComm_t comm() const { return comm_; }
  cudaStream_t stream() const { return stream_; }

  // Abort on timeout so that the stuck kernel ends; the communicator is unusable afterwards.
  void Abort() {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  // Host tensors (the trainer's metrics, flags and checkpoint reports) go through the MPI bootstrap; device
  // tensors (gradients, weights, KV packets) through NCCL. Both block until done, so their order is the
  // program's.
  absl::Status AllReduce(at::Tensor& t, ReduceOp op) override {
    if (IsHost(t)) return bootstrap_->AllReduce(t, op);
    return AllReduceAsync(t, op)->Wait();
  }
  std::unique_ptr<Work> AllReduceAsync(at::Tensor& t, ReduceOp op) override {
    if (IsHost(t)) return bootstrap_->AllReduceAsync(t, op);
    absl::Status s = internal::CheckTensor(t, "AllReduce", true, true);
    if (s.ok()) s = internal::CheckReduceOp(t, op, "AllReduce");
    auto type = NcclType(t);
    if (s.ok() && !type.ok()) s = type.status();
    if (s.ok())
      s = Launch(
          [&] {
            return ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), *type, NcclOp(op), comm_, stream_);
          },
          "ncclAllReduce");
    return std::make_unique<NcclWork>("AllReduce", this, std::vector<at::Tensor>{t}, s);
  }

  absl::Status AllGather(const at::Tensor& in, at::Tensor& out) override {
    if (IsHost(in) && IsHost(out)) return bootstrap_->AllGather(in, out);
    absl::Status s = internal::CheckTensor(in, "AllGather input", false, true);
    if (s.ok()) s = internal::CheckTensor(out, "AllGather output", false, true);
    if (s.ok() && (out.numel() != size() * in.numel() || out.scalar_type() != in.scalar_type())) {
      s = absl::InvalidArgumentError(absl::StrCat("AllGather: output must have size() * input numel = ",
                                                  size() * in.numel(), " elements of the input dtype"));
    }
    if (s.ok())
      s = Launch(
          [&] { return ncclAllGather(in.data_ptr(), out.data_ptr(), Bytes(in), ncclUint8, comm_, stream_); },
          "ncclAllGather");
    return NcclWork("AllGather", this, {in, out}, s).Wait();
  }

  absl::Status AllGatherV(const at::Tensor& in, std::vector<at::Tensor>* out) override {
    if (IsHost(in)) return bootstrap_->AllGatherV(in, out);
    if (auto s = internal::CheckTensor(in, "AllGatherV", false, true); !s.ok()) return s;
    if (in.dim() == 0) return absl::InvalidArgumentError("AllGatherV: input must have at least 1 dimension");
    // Row counts travel through MPI (host metadata); the payload through grouped NCCL broadcasts.
    at::Tensor meta = at::empty({1, in.dim()}, at::kLong);
    for (int64_t d = 0; d < in.dim(); ++d) meta.data_ptr<int64_t>()[d] = in.size(d);
    std::vector<at::Tensor> metas;
    if (auto s = bootstrap_->AllGatherV(meta, &metas); !s.ok()) return s;
    out->clear();
    std::vector<at::Tensor> keep{in};
    for (int r = 0; r < size(); ++r) {
      std::vector<int64_t> shape(metas[r].data_ptr<int64_t>(), metas[r].data_ptr<int64_t>() + in.dim());
      for (int64_t d = 1; d < in.dim(); ++d) {
        if (shape[d] != in.size(d)) {
          return absl::InvalidArgumentError(absl::StrCat("AllGatherV: rank ", r,
                                                         " passes rows of a different "
                                                         "shape; every rank must pass [n_i, same rest...]"));
        }
      }
      out->push_back(r == rank() ? in.clone() : at::empty(shape, in.options()));
      keep.push_back(out->back());
    }
    absl::Status s = Launch(
        [&] {
          ncclGroupStart();
          for (int r = 0; r < size(); ++r) {
            at::Tensor& t = (*out)[r];
            ncclBroadcast(t.data_ptr(), t.data_ptr(), Bytes(t), ncclUint8, r, comm_, stream_);
          }
          return ncclGroupEnd();
        },
        "AllGatherV broadcasts");
    return NcclWork("AllGatherV", this, keep, s).Wait();
  }

  absl::Status ReduceScatter(const at::Tensor& in, at::Tensor& out, ReduceOp op) override {
    return ReduceScatterAsync(in, out, op)->Wait();
  }
  std::unique_ptr<Work> ReduceScatterAsync(const at::Tensor& in, at::Tensor& out, ReduceOp op) override {
    if (IsHost(in) && IsHost(out)) return bootstrap_->ReduceScatterAsync(in, out, op);
    absl::Status s = internal::CheckTensor(in, "ReduceScatter input", true, true);
    if (s.ok()) s = internal::CheckTensor(out, "ReduceScatter output", true, true);
    if (s.ok()) s = internal::CheckReduceOp(in, op, "ReduceScatter");
    if (s.ok() && (in.numel() != size() * out.numel() || in.scalar_type() != out.scalar_type())) {
      s = absl::InvalidArgumentError(absl::StrCat("ReduceScatter: input numel ", in.numel(),
                                                  " must equal size() * output numel ", out.numel()));
    }
    auto type = NcclType(in);
    if (s.ok() && !type.ok()) s = type.status();
    if (s.ok())
      s = Launch(
          [&] {
            return ncclReduceScatter(in.data_ptr(), out.data_ptr(), out.numel(), *type, NcclOp(op), comm_,
                                     stream_);
          },
          "ncclReduceScatter");
    return std::make_unique<NcclWork>("ReduceScatter", this, std::vector<at::Tensor>{in, out}, s);
  }

  absl::Status Broadcast(at::Tensor& t, int root) override {
    if (IsHost(t)) return bootstrap_->Broadcast(t, root);
    absl::Status s = internal::CheckTensor(t, "Broadcast", false, true);
    if (s.ok() && (root < 0 || root >= size()))
      s = absl::InvalidArgumentError("Broadcast: root out of range");
    if (s.ok())
      s = Launch(
          [&] {
            return ncclBroadcast(t.data_ptr(), t.data_ptr(), Bytes(t), ncclUint8, root, comm_, stream_);
          },
          "ncclBroadcast");
    return NcclWork("Broadcast", this, {t}, s).Wait();
  }

  // NCCL point-to-point has no tags; messages between a pair are matched in call order.
  absl::Status Send(const at::Tensor& t, int peer, int tag) override {
    if (IsHost(t)) return bootstrap_->Send(t, peer, tag);
    absl::Status s = internal::CheckTensor(t, "Send", false, true);
    if (s.ok())
      s = Launch([&] { return ncclSend(t.data_ptr(), Bytes(t), ncclUint8, peer, comm_, stream_); },
                 "ncclSend");
    return NcclWork("Send", this, {t}, s).Wait();
  }
  absl::Status Recv(at::Tensor& t, int peer, int tag) override {
    if (IsHost(t)) return bootstrap_->Recv(t, peer, tag);
    absl::Status s = internal::CheckTensor(t, "Recv", false, true);
    if (s.ok())
      s = Launch([&] { return ncclRecv(t.data_ptr(), Bytes(t), ncclUint8, peer, comm_, stream_); },
                 "ncclRecv");
    return NcclWork("Recv", this, {t}, s).Wait();
  }

  absl::Status AllToAllV(const std::vector<at::Tensor>& send, std::vector<at::Tensor>* recv) override {
    if (!send.empty() && IsHost(send[0])) return bootstrap_->AllToAllV(send, recv);
    if (static_cast<int>(send.size()) != size()) {
      return absl::InvalidArgumentError(absl::StrCat("AllToAllV: need one tensor per rank (", size(), ")"));
    }
    for (const auto& t : send) {
      if (auto s = internal::CheckTensor(t, "AllToAllV", false, true); !s.ok()) return s;
      if (t.dim() == 0)
        return absl::InvalidArgumentError("AllToAllV: tensors must have at least 1 dimension");
    }
    at::Tensor rows_out = at::empty({size()}, at::kLong);
    for (int r = 0; r < size(); ++r) rows_out.data_ptr<int64_t>()[r] = send[r].size(0);
    std::vector<at::Tensor> rows_in;
    if (auto s = bootstrap_->AllToAllV(rows_out.split(1), &rows_in); !s.ok()) return s;
    recv->clear();
    std::vector<at::Tensor> keep(send.begin(), send.end());
    for (int r = 0; r < size(); ++r) {
      std::vector<int64_t> shape = send[0].sizes().vec();
      shape[0] = rows_in[r].data_ptr<int64_t>()[0];
      recv->push_back(at::empty(shape, send[0].options()));
      keep.push_back(recv->back());
    }
    absl::Status s = Launch(
        [&] {
          ncclGroupStart();
          for (int r = 0; r < size(); ++r) {
            ncclSend(send[r].data_ptr(), Bytes(send[r]), ncclUint8, r, comm_, stream_);
            ncclRecv((*recv)[r].data_ptr(), Bytes((*recv)[r]), ncclUint8, r, comm_, stream_);
          }
          return ncclGroupEnd();
        },
        "AllToAllV send/recv group");
    return NcclWork("AllToAllV", this, keep, s).Wait();
  }

  absl::Status Barrier() override {
    // Drain our stream first so that "after the barrier" includes the NCCL work issued before it.
    if (auto s = NcclWork("Barrier (drain)", this, {}, absl::OkStatus()).Wait(); !s.ok()) return s;
    return bootstrap_->Barrier();
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    auto child = bootstrap_->Split(color, key);
    if (!child.ok()) return child.status();
    // The bootstrap keeps the settings it was created with; the child takes this communicator's.
    (*child)->set_timeout(timeout());
    (*child)->set_abort_on_timeout(abort_on_timeout());
    return MakeNcclCommunicator(*std::move(child), device_);
  }

 private:
  // Orders the NCCL stream after the caller's (default) stream, then enqueues `enqueue`.
  template <typename F>
  absl::Status Launch(F&& enqueue, absl::string_view what) {
    if (comm_ == nullptr)
      return absl::FailedPreconditionError("NCCL communicator was aborted after a timeout");
    cudaEvent_t ready;
    if (auto s = CudaStatus(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate");
        !s.ok()) {
      return s;
    }
    cudaEventRecord(ready, /*stream=*/0);
    cudaStreamWaitEvent(stream_, ready, 0);
    cudaEventDestroy(ready);
    return NcclStatus(enqueue(), what);
  }

  std::unique_ptr<Communicator> bootstrap_;
  int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

NcclWork::NcclWork(std::string what, NcclCommunicator* comm, std::vector<at::Tensor> keep,
                   absl::Status launch)
    : what_(std::move(what)), comm_(comm), keep_(std::move(keep)), status_(std::move(launch)) {
  if (!status_.ok()) {
    done_ = true;
    return;
  }
  status_ = CudaStatus(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate");
  if (status_.ok()) status_ = CudaStatus(cudaEventRecord(event_, comm_->stream()), "cudaEventRecord");
  if (!status_.ok()) done_ = true;
}

NcclWork::~NcclWork() {
  if (!done_) (void)Wait();
  if (event_ != nullptr) cudaEventDestroy(event_);
}

bool NcclWork::Poll() {
  if (done_) return true;
  cudaError_t e = cudaEventQuery(event_);
  if (e == cudaErrorNotReady) {
    ncclResult_t async = ncclSuccess;
    if (comm_->comm() != nullptr) ncclCommGetAsyncError(comm_->comm(), &async);
    if (async == ncclSuccess || async == ncclInProgress) return false;
    status_ = NcclStatus(async, what_);
    done_ = true;
    return true;
  }
  done_ = true;
  status_ = CudaStatus(e, what_);
  // Later kernels on the caller's stream must see the results.
  if (status_.ok()) cudaStreamWaitEvent(/*stream=*/0, event_, 0);
  keep_.clear();
  return true;
}

absl::Status NcclWork::Wait() {
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + comm_->timeout();
  while (!Poll()) {
    const absl::Time now = absl::Now();
    if (now > deadline) {
      comm_->Abort();
      done_ = true;
      status_ = internal::HandleTimeout(
          comm_->abort_on_timeout(),
          internal::TimeoutMessage(absl::StrCat("NCCL ", what_), comm_->timeout(), now - start, comm_->rank(),
                                   comm_->size(), "the communicator was aborted"));
      return status_;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return status_;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(std::unique_ptr<Communicator> bootstrap,
                                                                   int device) {
  auto comm = std::make_unique<NcclCommunicator>(std::move(bootstrap), device);
  if (auto s = comm->Init(); !s.ok()) return s;
  return std::unique_ptr<Communicator>(std::move(comm));
}

}  // namespace nats::parallel
