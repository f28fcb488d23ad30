// The LibTorch side of nats/cuda/device_attention.h: checks, buffers, and the launch on the tensors' device
// (nats/cuda/nats_kernels.h: gpu:: for CUDA tensors, host:: for CPU tensors).
#include "nats/cuda/device_attention.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <cmath>
#include <optional>
#include <type_traits>

#include "nats/attention_shapes.h"
#include "nats/cuda/nats_kernels.h"
#include "nats/cuda/nats_rows.h"

#if NATS_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace nats {
namespace {

struct Launcher {
  bool cuda = false;
  void* stream = nullptr;
};

Launcher LauncherFor(const at::Tensor& q) {
  Launcher l;
  if (!q.is_cuda()) return l;
  TORCH_CHECK(RowwiseKernelsOnCuda(),
              "NAtS attention on a CUDA tensor needs a build against a CUDA LibTorch (this one was built "
              "against a CPU LibTorch or without nvcc; see docs/gpu.md)");
  l.cuda = true;
#if NATS_HAVE_CUDA_KERNELS
  l.stream = c10::cuda::getCurrentCUDAStream(q.device().index()).stream();
#endif
  return l;
}

// Makes q's GPU the current device while the kernels launch (they run on the current device); nothing on CPU.
class DeviceScope {
 public:
  explicit DeviceScope(const at::Tensor& q) {
#if NATS_HAVE_CUDA_KERNELS
    if (q.is_cuda()) guard_.emplace(q.device());
#else
    (void)q;
#endif
  }

 private:
#if NATS_HAVE_CUDA_KERNELS
  std::optional<c10::cuda::CUDAGuard> guard_;
#endif
};

#if NATS_HAVE_CUDA_KERNELS
void Check(int code, const char* what) {
  TORCH_CHECK(code == 0, "NAtS CUDA kernel (", what, ") failed: ", rows::gpu::ErrorString(code));
}
#endif

// Validates the types once (a TokenType outside 0..2 would index past the mask rules) and returns them as
// contiguous int8 on the tensors' device.
at::Tensor CheckedTypes(const at::Tensor& types, const at::Tensor& q) {
  at::Tensor ty = types.to(q.device(), at::kChar).contiguous();
  if (ty.numel() > 0) {
    const int64_t lo = ty.min().item<int64_t>(), hi = ty.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi <= 2, "NAtS types must hold TokenType values 0..2, got values in [", lo, ", ",
                hi, "]");
  }
  return ty;
}

struct MetaBuffers {
  at::Tensor last, next, prev;
};

template <typename S>
rows::Args<S> BaseArgs(const AttentionDims& dims, const at::Tensor& qc, const at::Tensor& kc,
                       const at::Tensor& vc, const at::Tensor& ty, MetaBuffers* meta, int64_t window,
                       int64_t query_begin) {
  rows::Args<S> a;
  a.q = qc.data_ptr<S>();
  a.k = kc.data_ptr<S>();
  a.v = vc.data_ptr<S>();
  a.types = ty.data_ptr<int8_t>();
  const auto int_options = ty.options().dtype(at::kInt);
  meta->last = at::empty(ty.sizes(), int_options);
  meta->next = at::empty(ty.sizes(), int_options);
  meta->prev = at::empty(ty.sizes(), int_options);
  a.last = meta->last.data_ptr<int32_t>();
  a.next = meta->next.data_ptr<int32_t>();
  a.prev = meta->prev.data_ptr<int32_t>();
  a.b = dims.b;
  a.h = dims.h;
  a.h_kv = dims.h_kv;
  a.n_rep = dims.n_rep;
  a.t = dims.t;
  a.d = dims.d;
  a.window = window;
  a.query_begin = query_begin;
  a.scale = static_cast<S>(1.0 / std::sqrt(static_cast<double>(dims.d)));
  return a;
}

AttentionDims CheckRowwise(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& types, int64_t window) {
  const AttentionDims dims = CheckAttentionShapes(q, k, v, types);
  TORCH_CHECK(window >= 0, "NAtS window must be >= 0, got ", window);
  TORCH_CHECK(dims.d <= rows::kMaxHeadDim,
              "the row-wise NAtS kernel supports head size <= ", rows::kMaxHeadDim, ", got ", dims.d);
  TORCH_CHECK(dims.t < (int64_t{1} << 30), "the row-wise NAtS kernel supports T < 2^30, got ", dims.t);
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), "q, k and v must be on one device, got ",
              q.device(), ", ", k.device(), ", ", v.device());
  return dims;
}

at::ScalarType ComputeType(const at::Tensor& q) { return q.is_cuda() ? at::kFloat : AttentionComputeType(q); }

// The mask data, then the forward or the backward, on the launcher's side (nats/cuda/nats_kernels.h).
template <typename S>
void Run(const rows::Args<S>& a, const Launcher& launch, bool backward) {
  if (!launch.cuda) {
    rows::host::BuildMeta(a);
    backward ? rows::host::Backward(a) : rows::host::Forward(a);
    return;
  }
#if NATS_HAVE_CUDA_KERNELS  // else LauncherFor has refused CUDA tensors
  if constexpr (std::is_same_v<S, float>) {
    Check(rows::gpu::BuildMeta(a, launch.stream), "mask data");
    Check(backward ? rows::gpu::Backward(a, launch.stream) : rows::gpu::Forward(a, launch.stream),
          backward ? "backward" : "forward");
  }
#endif
}

template <typename S>
FusedForwardResult ForwardTyped(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& types, int64_t window, bool keep_lse, bool keep_full,
                                int64_t query_begin, const AttentionDims& dims, const Launcher& launch) {
  const at::ScalarType st = ComputeType(q);
  const at::Tensor qc = q.to(st).contiguous(), kc = k.to(st).contiguous(), vc = v.to(st).contiguous();
  const at::Tensor ty = CheckedTypes(types, q);
  MetaBuffers meta;
  rows::Args<S> a = BaseArgs<S>(dims, qc, kc, vc, ty, &meta, window, query_begin);
  FusedForwardResult result;
  at::Tensor out = at::empty(qc.sizes(), qc.options());
  a.out = out.data_ptr<S>();
  a.keep_full = keep_full;
  if (keep_lse) {
    result.lse_masked = at::empty({dims.b, dims.h, dims.t}, qc.options());
    a.lse_m = result.lse_masked.data_ptr<S>();
  }
  if (keep_full) {
    result.lse_full = at::empty({dims.b, dims.h, dims.t}, qc.options());
    a.lse_f = result.lse_full.data_ptr<S>();
  }
  Run(a, launch, /*backward=*/false);
  result.out = out.to(q.scalar_type());
  return result;
}

template <typename S>
FusedGradients BackwardTyped(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& types, const FusedForwardResult& forward,
                             const at::Tensor& dout, const AttentionOptions& options, bool need_type_grad,
                             const AttentionDims& dims, const Launcher& launch) {
  const at::ScalarType st = ComputeType(q);
  const at::Tensor qc = q.to(st).contiguous(), kc = k.to(st).contiguous(), vc = v.to(st).contiguous();
  const at::Tensor oc = forward.out.to(st).contiguous(), doc = dout.to(st).contiguous();
  const at::Tensor lse = forward.lse_masked.to(st).contiguous();
  const bool full = need_type_grad && options.grad_mode == MaskGradMode::kUnmasked;
  TORCH_CHECK(!full || forward.lse_full.defined(), "the unmasked grad mode needs the forward's causal lse");
  const at::Tensor lse_full = full ? forward.lse_full.to(st).contiguous() : at::Tensor();
  const at::Tensor ty = CheckedTypes(types, q);
  MetaBuffers meta;
  rows::Args<S> a = BaseArgs<S>(dims, qc, kc, vc, ty, &meta, options.window, options.query_begin);
  a.out = const_cast<S*>(oc.data_ptr<S>());  // read only in the backward
  a.lse_m = const_cast<S*>(lse.data_ptr<S>());
  if (full) a.lse_f = const_cast<S*>(lse_full.data_ptr<S>());
  a.dout = doc.data_ptr<S>();
  a.grad_mode = static_cast<int>(options.grad_mode);
  a.lambda = options.lambda;
  at::Tensor delta = at::empty({dims.b, dims.h, dims.t}, qc.options());
  at::Tensor dq = at::empty(qc.sizes(), qc.options());
  at::Tensor dk = at::empty(kc.sizes(), kc.options()), dv = at::empty(vc.sizes(), vc.options());
  a.delta = delta.data_ptr<S>();
  a.dq = dq.data_ptr<S>();
  a.dk = dk.data_ptr<S>();
  a.dv = dv.data_ptr<S>();
  at::Tensor type_sums, dtypes;
  if (need_type_grad) {
    type_sums = at::zeros({dims.b, dims.h_kv, dims.t, 4}, qc.options().dtype(at::kDouble));
    dtypes = at::empty({dims.b, dims.h_kv, dims.t, 3}, qc.options());
    a.type_sums = type_sums.data_ptr<double>();
    a.dtypes = dtypes.data_ptr<S>();
  }
  Run(a, launch, /*backward=*/true);
  FusedGradients grads;
  grads.dq = dq.to(q.scalar_type());
  grads.dk = dk.to(k.scalar_type());
  grads.dv = dv.to(v.scalar_type());
  grads.dtypes = dtypes;
  return grads;
}

}  // namespace

bool RowwiseKernelsOnCuda() {
#if NATS_HAVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

FusedForwardResult RowwiseNatsForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& types, int64_t window, bool keep_lse,
                                      bool keep_full_lse, int64_t query_begin) {
  RECORD_FUNCTION("nats::rowwise_attention_forward", std::vector<c10::IValue>());
  const AttentionDims dims = CheckRowwise(q, k, v, types, window);
  const Launcher launch = LauncherFor(q);
  const DeviceScope scope(q);
  at::NoGradGuard no_grad;
  if (ComputeType(q) == at::kDouble) {
    return ForwardTyped<double>(q, k, v, types, window, keep_lse, keep_full_lse, query_begin, dims, launch);
  }
  return ForwardTyped<float>(q, k, v, types, window, keep_lse, keep_full_lse, query_begin, dims, launch);
}

FusedGradients RowwiseNatsBackward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& types, const FusedForwardResult& forward,
                                   const at::Tensor& dout, const AttentionOptions& options,
                                   bool need_type_grad) {
  RECORD_FUNCTION("nats::rowwise_attention_backward", std::vector<c10::IValue>());
  const AttentionDims dims = CheckRowwise(q, k, v, types, options.window);
  TORCH_CHECK(dout.sizes() == q.sizes(), "dout ", dout.sizes(), " must match q ", q.sizes());
  TORCH_CHECK(forward.out.defined() && forward.lse_masked.defined(),
              "backward needs the forward's out and lse");
  const Launcher launch = LauncherFor(q);
  const DeviceScope scope(q);
  at::NoGradGuard no_grad;
  if (ComputeType(q) == at::kDouble) {
    return BackwardTyped<double>(q, k, v, types, forward, dout, options, need_type_grad, dims, launch);
  }
  return BackwardTyped<float>(q, k, v, types, forward, dout, options, need_type_grad, dims, launch);
}

}  // namespace nats
