#include "parallel/data_parallel.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace nats::parallel {

DataParallel::DataParallel(std::vector<at::Tensor> params, Communicator& comm, DataParallelOptions options)
    : params_(std::move(params)), comm_(comm), options_(options) {
  const int n = static_cast<int>(params_.size());
  bucket_of_.assign(n, -1);
  offset_of_.assign(n, 0);
  ready_.assign(n, false);
  const int64_t capacity = std::max<int64_t>(1, static_cast<int64_t>(options_.bucket_mb * 1024 * 1024));
  // Reverse order: backward produces the last layers' gradients first, so their bucket fills first.
  std::vector<int64_t> sizes;  // elements per bucket
  for (int i = n - 1; i >= 0; --i) {
    const at::Tensor& p = params_[i];
    TORCH_CHECK(p.defined() && p.requires_grad() && p.is_leaf(), "DataParallel: parameter ", i,
                " must be a leaf tensor that requires grad");
    const int64_t bytes = p.numel() * p.element_size();
    bool start_new = buckets_.empty();
    if (!start_new) {
      const at::Tensor& first = params_[buckets_.back().params.front()];
      const int64_t used = sizes.back() * first.element_size();
      start_new = first.scalar_type() != p.scalar_type() || first.device() != p.device() ||
                  (used > 0 && used + bytes > capacity);
    }
    if (start_new) {
      buckets_.emplace_back();
      sizes.push_back(0);
    }
    bucket_of_[i] = static_cast<int>(buckets_.size()) - 1;
    offset_of_[i] = sizes.back();
    buckets_.back().params.push_back(i);
    sizes.back() += p.numel();
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const at::Tensor& first = params_[buckets_[b].params.front()];
    buckets_[b].flat = at::zeros({sizes[b]}, first.options().requires_grad(false));
    buckets_[b].pending = static_cast<int>(buckets_[b].params.size());
  }
  for (int i = 0; i < n; ++i) {
    hook_handles_.push_back(params_[i].register_hook([this, i](at::Tensor grad) { OnGradient(i, grad); }));
  }
}

DataParallel::~DataParallel() {
  for (size_t i = 0; i < hook_handles_.size(); ++i) params_[i].remove_hook(hook_handles_[i]);
  for (auto& bucket : buckets_) {
    if (bucket.work) (void)bucket.work->Wait();
  }
}

void DataParallel::set_sync(bool sync) {
  std::lock_guard<std::mutex> lock(mutex_);
  sync_ = sync;
}

void DataParallel::ResetStep() {
  std::fill(ready_.begin(), ready_.end(), false);
  for (auto& bucket : buckets_) {
    bucket.pending = static_cast<int>(bucket.params.size());
    bucket.work.reset();
  }
  next_launch_ = 0;
  step_active_ = false;
  hook_error_ = absl::OkStatus();
  launched_ = 0;
  launched_bytes_ = 0;
}

void DataParallel::OnGradient(int index, const at::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!sync_) return;
  step_active_ = true;
  if (ready_[index]) {
    // A second backward through the same parameters before FinishGradientSync: its bucket may already
    // be on the wire, so the gradient cannot be added any more.
    if (hook_error_.ok()) {
      hook_error_ = absl::FailedPreconditionError(absl::StrCat(
          "DataParallel: parameter ", index,
          " received a gradient twice in one synchronised step; call "
          "set_sync(false) for all but the last backward of a step and FinishGradientSync() after it"));
    }
    return;
  }
  Bucket& bucket = buckets_[bucket_of_[index]];
  const at::Tensor& p = params_[index];
  at::Tensor slot = bucket.flat.narrow(0, offset_of_[index], p.numel()).view(p.sizes());
  slot.copy_(grad);
  // LibTorch runs this hook before AccumulateGrad: param.grad() still holds the earlier micro-steps.
  if (p.grad().defined()) slot.add_(p.grad());
  ready_[index] = true;
  if (--bucket.pending == 0) LaunchReadyBuckets();
  // MPI advances non-blocking collectives only inside MPI calls: poll while backward runs.
  for (size_t b = 0; b < next_launch_; ++b) {
    if (buckets_[b].work) buckets_[b].work->Poll();
  }
}

void DataParallel::LaunchReadyBuckets() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Launch(buckets_[next_launch_]);
    ++next_launch_;
  }
}

void DataParallel::Launch(Bucket& bucket) {
  if (launched_ == 0) first_launch_ = absl::Now();
  bucket.work = comm_.AllReduceAsync(bucket.flat, ReduceOp::kAvg);
  launched_ += 1;
  launched_bytes_ += bucket.flat.numel() * bucket.flat.element_size();
}

absl::Status DataParallel::FinishGradientSync() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!sync_) return absl::OkStatus();
  const absl::Time start = absl::Now();
  const int64_t launched_during_backward = static_cast<int64_t>(next_launch_);
  // Parameters that got no gradient in this backward contribute what they accumulated (or zeros): every
  // rank must still take part in every bucket's all-reduce.
  for (size_t i = 0; i < params_.size(); ++i) {
    if (ready_[i]) continue;
    Bucket& bucket = buckets_[bucket_of_[i]];
    const at::Tensor& p = params_[i];
    at::Tensor slot = bucket.flat.narrow(0, offset_of_[i], p.numel()).view(p.sizes());
    if (p.grad().defined()) {
      slot.copy_(p.grad());
    } else {
      slot.zero_();
    }
    ready_[i] = true;
    --bucket.pending;
  }
  LaunchReadyBuckets();
  TORCH_INTERNAL_ASSERT(next_launch_ == buckets_.size(), "DataParallel: a bucket was not launched");
  absl::Status status = hook_error_;
  for (auto& bucket : buckets_) {
    absl::Status s = bucket.work->Wait();
    if (status.ok() && !s.ok()) status = s;
  }
  const absl::Time end = absl::Now();
  if (status.ok()) {
    for (size_t i = 0; i < params_.size(); ++i) {
      at::Tensor& p = params_[i];
      const Bucket& bucket = buckets_[bucket_of_[i]];
      at::Tensor reduced = bucket.flat.narrow(0, offset_of_[i], p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(reduced);
      } else {
        p.mutable_grad() = reduced.clone();
      }
    }
  }
  stats_.buckets = launched_;
  stats_.bytes_reduced = launched_bytes_;
  stats_.launched_during_backward = launched_during_backward;
  stats_.comm_seconds = absl::ToDoubleSeconds(end - first_launch_);
  stats_.wait_seconds = absl::ToDoubleSeconds(end - start);
  stats_.syncs += 1;
  ResetStep();
  return status;
}

absl::Status DataParallel::ReduceGradientsBlocking() {
  const absl::Time start = absl::Now();
  int64_t bytes = 0;
  for (auto& p : params_) {
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    at::Tensor g = p.grad().is_contiguous() ? p.grad() : p.grad().contiguous();
    if (auto s = comm_.AllReduce(g, ReduceOp::kAvg); !s.ok()) return s;
    if (!g.is_same(p.grad())) p.mutable_grad().copy_(g);
    bytes += g.numel() * g.element_size();
  }
  stats_.syncs += 1;
  stats_.buckets = static_cast<int64_t>(params_.size());
  stats_.bytes_reduced = bytes;
  stats_.launched_during_backward = 0;
  stats_.comm_seconds = stats_.wait_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return absl::OkStatus();
}

absl::Status DataParallel::BroadcastParameters(int root) {
  for (auto& p : params_) {
    at::Tensor data = p.detach();
    if (auto s = comm_.Broadcast(data, root); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace nats::parallel
