// parallel/data_parallel.h
//
// Data-parallel gradient averaging with overlap (docs/architecture.md section 4, "gradient buckets
// all-reduced ... as they become ready").
//
// Parameters are packed into buckets of ~bucket_mb in REVERSE parameter order (the order backward
// produces gradients). An autograd hook on each parameter copies its gradient into its bucket slot;
// when a bucket is full an asynchronous all-reduce (average over the communicator) starts while backward
// continues. FinishGradientSync() launches what is left, waits, and writes the averaged gradients into
// param.grad(). Buckets are launched strictly in bucket order on every rank (MPI requires one collective
// order on all ranks; a bucket that fills early waits for its predecessors).
//
// Gradient accumulation: with set_sync(false) the hooks do nothing and gradients accumulate locally in
// param.grad(). On the last micro-step call set_sync(true) before backward: the hook then packs
// param.grad() (the earlier micro-steps, read before autograd adds this one) + the incoming gradient, so
// the reduction covers the whole accumulated gradient once. Call FinishGradientSync() after every backward
// done with sync on (it returns immediately when sync is off).
//
// After FinishGradientSync every parameter has a defined grad (zeros for parameters that received no
// gradient on any rank). Parameters must be contiguous leaf tensors that require grad, on the
// communicator's device; one dtype per bucket (a dtype change starts a new bucket).
//
// ReduceGradientsBlocking() is the slow twin: after backward, one blocking all-reduce per parameter.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <mutex>
#include <vector>

#include "absl/time/time.h"
#include "parallel/communicator.h"

namespace nats::parallel {

struct DataParallelOptions {
  // PyTorch DDP's default; big enough to amortise per-call latency, small enough to start early.
  double bucket_mb = 25.0;
};

// Counters of the last synchronised step (FinishGradientSync or ReduceGradientsBlocking).
struct DataParallelStats {
  int64_t syncs = 0;                     // number of completed syncs so far
  int64_t buckets = 0;                   // all-reduces issued in the last sync
  int64_t bytes_reduced = 0;             // payload bytes all-reduced in the last sync
  int64_t launched_during_backward = 0;  // buckets started by hooks (before FinishGradientSync)
  double comm_seconds = 0;               // first launch -> all complete
  double wait_seconds = 0;               // time blocked inside FinishGradientSync
  // Fraction of communication hidden behind backward: 1 - wait / comm (0 when nothing overlapped).
  double overlap() const { return comm_seconds > 0 ? 1.0 - wait_seconds / comm_seconds : 0.0; }
};

class DataParallel {
 public:
  // Registers one hook per parameter; `comm` must outlive this object.
  DataParallel(std::vector<at::Tensor> params, Communicator& comm, DataParallelOptions options = {});
  // Removes the hooks (waits for in-flight reductions).
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Whether the next backward reduces (true, the default) or only accumulates locally.
  void set_sync(bool sync);
  bool sync() const { return sync_; }

  // Completes the reduction started by the hooks; see the header comment.
  absl::Status FinishGradientSync();

  // Slow twin: a blocking all-reduce (average) of every param.grad(), in parameter order. Use it with
  // set_sync(false) so the hooks stay idle.
  absl::Status ReduceGradientsBlocking();

  // Copies rank `root`'s parameter values to every rank (start-up; replicas must begin identical).
  absl::Status BroadcastParameters(int root = 0);

  const DataParallelStats& stats() const { return stats_; }
  int num_buckets() const { return static_cast<int>(buckets_.size()); }

 private:
  struct Bucket {
    at::Tensor flat;             // packed gradients
    std::vector<int> params;     // indices into params_
    int pending = 0;             // params whose gradient is not yet in `flat`
    std::unique_ptr<Work> work;  // in-flight all-reduce
  };

  void OnGradient(int index, const at::Tensor& grad);
  void LaunchReadyBuckets();
  void Launch(Bucket& bucket);
  void ResetStep();

  std::vector<at::Tensor> params_;
  std::vector<unsigned> hook_handles_;
  std::vector<int> bucket_of_;      // param index -> bucket
  std::vector<int64_t> offset_of_;  // param index -> offset in its bucket
  std::vector<bool> ready_;
  std::vector<Bucket> buckets_;
  Communicator& comm_;
  DataParallelOptions options_;
  bool sync_ = true;
  bool step_active_ = false;  // some hook fired since the last FinishGradientSync
  size_t next_launch_ = 0;    // buckets [0, next_launch_) are in flight
  absl::Status hook_error_;
  absl::Time first_launch_;
  int64_t launched_ = 0;  // buckets launched in the current step
  int64_t launched_bytes_ = 0;
  DataParallelStats stats_;
  std::mutex mutex_;  // hooks may run on autograd device threads
};

}  // namespace nats::parallel
