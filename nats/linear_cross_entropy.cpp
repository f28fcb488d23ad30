// Fused linear + cross-entropy (see the header): row chunks of logits -> softmax - onehot -> dx, dW.
#include "nats/linear_cross_entropy.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

// The row kernel must vectorise; the project builds with -O2, where GCC does not vectorise it. After the
// library headers (their code keeps the build's flags) and before ours.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif

#include "nats/vector_math.h"

namespace nats {
namespace {

// Rows per chunk. Host: 512 x 50304 floats = 103 MB; the three head matmuls over 512-row chunks ran as fast
// as over 4096 rows at once here (126-137 vs 121-137 GFLOP/s, d 192). Device: enough rows for the GPU's
// matmuls to run near peak (1024 x 50304 fp32 = 206 MB).
constexpr int64_t kHostChunkRows = 512;
constexpr int64_t kDeviceChunkRows = 1024;

// Columns per partial sum of the exponentials: each block is summed in T lanes (which vectorise; double
// lanes fed by float terms did not), the blocks' sums in double, so 50k terms lose no loss digits.
constexpr int64_t kSumBlock = 1024;

// softmax - onehot of one row of logits in place; returns the row's loss, logsumexp - z[target].
template <typename T>
NATS_ALWAYS_INLINE double SoftmaxMinusOnehotRowImpl(T* z, int64_t v, int64_t target) {
  T mx[kLanes];
  for (int l = 0; l < kLanes; ++l) mx[l] = NegInf<T>();
  ForEachInLanes(v, [&](int64_t c, int l) { mx[l] = z[c] > mx[l] ? z[c] : mx[l]; });
  const T m = MaxOfLanes(mx);
  const double z_target = z[target];
  double total = 0;
  for (int64_t c0 = 0; c0 < v; c0 += kSumBlock) {
    T* zb = z + c0;
    T sum[kLanes] = {};
    ForEachInLanes(std::min(kSumBlock, v - c0), [&](int64_t c, int l) {
      const T e = FastExp(zb[c] - m);
      zb[c] = e;
      sum[l] += e;
    });
    total += SumOfLanes(sum);
  }
  const T inv = static_cast<T>(1.0 / total);
  for (int64_t c = 0; c < v; ++c) z[c] *= inv;
  z[target] -= T(1);
  return static_cast<double>(m) + std::log(total) - z_target;
}

// Non-template entry points: target_clones does not apply to templates.
NATS_MULTIVERSION double SoftmaxMinusOnehotRow(float* z, int64_t v, int64_t target) {
  return SoftmaxMinusOnehotRowImpl(z, v, target);
}
NATS_MULTIVERSION double SoftmaxMinusOnehotRow(double* z, int64_t v, int64_t target) {
  return SoftmaxMinusOnehotRowImpl(z, v, target);
}

// A chunk of host logits -> its gradient in place, rows in parallel; returns the chunk's summed loss (summed
// in row order, so it does not depend on the thread count).
double HostSoftmaxMinusOnehot(const at::Tensor& z, const int64_t* targets) {
  const int64_t rows = z.size(0), v = z.size(1);
  std::vector<double> row_loss(rows, 0.0);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "LinearCrossEntropy", [&] {
    scalar_t* zp = z.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 1, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; ++r) row_loss[r] = SoftmaxMinusOnehotRow(zp + r * v, v, targets[r]);
    });
  });
  double total = 0;
  for (double l : row_loss) total += l;
  return total;
}

// The same by ATen ops (any device, no host synchronisation); returns the chunk's summed loss as a tensor.
at::Tensor TensorSoftmaxMinusOnehot(at::Tensor& z, const at::Tensor& targets) {
  const at::Tensor idx = targets.unsqueeze(1);
  const at::Tensor lse = at::logsumexp(z, 1, /*keepdim=*/true);
  at::Tensor loss = (lse - z.gather(1, idx)).sum();
  z.sub_(lse).exp_();
  z.scatter_add_(1, idx, at::full({z.size(0), 1}, -1.0, z.options()));
  return loss;
}

// A [rows, v] buffer for a chunk's logits. On the host one buffer per process is kept and reused: a fresh
// one per call is a fresh mmap that the kernel zero-fills page by page. It is handed out only while nothing
// else holds its storage, so nested or concurrent calls get buffers of their own. Never freed (like a
// caching allocator's blocks); heap-held so that no tensor is destroyed at process exit.
at::Tensor LogitsBuffer(int64_t rows, int64_t v, const at::TensorOptions& options) {
  if (!options.device().is_cpu()) return at::empty({rows, v}, options);
  static std::mutex* mu = new std::mutex;
  static at::Tensor* cached = new at::Tensor;
  std::lock_guard<std::mutex> lock(*mu);
  const int64_t need = rows * v;
  const bool free = cached->defined() && cached->storage().use_count() == 1;
  if (free && cached->scalar_type() == options.dtype() && cached->numel() >= need) {
    return cached->narrow(0, 0, need).view({rows, v});
  }
  at::Tensor fresh = at::empty({need}, options);
  if (!cached->defined() || free) *cached = fresh;
  return fresh.view({rows, v});
}

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in,
                            const at::Tensor& weight, const at::Tensor& targets, bool whole_tensor,
                            bool host_rows, bool need_grad) {
    const at::Tensor x = x_in.contiguous();
    const int64_t n = x.size(0), v = weight.size(0);
    const at::Tensor t = targets.to(at::kLong).contiguous();
    if (n > 0) {
      TORCH_CHECK(t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < v,
                  "LinearCrossEntropy: targets must be in [0, ", v, ")");
    }
    ctx->saved_data["n"] = n;
    ctx->saved_data["whole_tensor"] = whole_tensor;
    const double inv_n = 1.0 / static_cast<double>(std::max<int64_t>(n, 1));
    if (whole_tensor) {
      // At least fp32 (bf16 logits come from an autocast matmul): a bf16 logsumexp over 50k entries would
      // lose the loss's digits.
      at::Tensor grad = at::mm(x, weight.t());
      if (grad.scalar_type() != at::kDouble) grad = grad.to(at::kFloat);
      grad = grad.contiguous();
      const at::Tensor loss = TensorSoftmaxMinusOnehot(grad, t) * inv_n;
      ctx->save_for_backward({x, weight, grad});
      return loss.to(x.scalar_type());
    }
    // Matmuls in x's dtype (bf16 under autocast); the loss math and the dW accumulation in fp32 (or double).
    const at::ScalarType mm_type = x.scalar_type();
    const at::ScalarType acc_type = mm_type == at::kDouble ? at::kDouble : at::kFloat;
    const bool same_type = mm_type == acc_type;
    const at::Tensor w = weight.to(mm_type);
    at::Tensor dx, dw;
    if (need_grad) {
      dx = at::empty(x.sizes(), x.options().dtype(acc_type));
      dw = at::zeros(weight.sizes(), weight.options().dtype(acc_type));
    }
    const int64_t chunk_rows = host_rows ? kHostChunkRows : kDeviceChunkRows;
    const at::Tensor buffer =
        LogitsBuffer(std::min(chunk_rows, std::max<int64_t>(n, 1)), v, x.options().dtype(acc_type));
    double host_loss = 0;
    at::Tensor device_loss = host_rows ? at::Tensor() : at::zeros({}, x.options().dtype(acc_type));
    for (int64_t r0 = 0; r0 < n; r0 += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, n - r0);
      const at::Tensor xc = x.narrow(0, r0, rows);
      at::Tensor z = buffer.narrow(0, 0, rows);
      if (same_type) {
        at::mm_out(z, xc, w.t());
      } else {
        z.copy_(at::mm(xc, w.t()));
      }
      if (host_rows) {
        host_loss += HostSoftmaxMinusOnehot(z, t.data_ptr<int64_t>() + r0);
      } else {
        device_loss.add_(TensorSoftmaxMinusOnehot(z, t.narrow(0, r0, rows)));
      }
      if (!need_grad) continue;
      at::Tensor dxc = dx.narrow(0, r0, rows);
      if (same_type) {
        at::mm_out(dxc, z, w);
        dw.addmm_(z.t(), xc);
      } else {
        const at::Tensor g = z.to(mm_type);
        dxc.copy_(at::mm(g, w));
        dw.add_(at::mm(g.t(), xc).to(acc_type));
      }
    }
    if (need_grad) ctx->save_for_backward({dx, dw});
    ctx->saved_data["x_dtype"] = x.scalar_type();
    ctx->saved_data["w_dtype"] = weight.scalar_type();
    if (host_rows) return at::full({}, host_loss * inv_n, x.options());
    return (device_loss * inv_n).to(x.scalar_type());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const int64_t n = ctx->saved_data["n"].toInt();
    const double inv_n = 1.0 / static_cast<double>(std::max<int64_t>(n, 1));
    if (!ctx->saved_data["whole_tensor"].toBool()) {
      TORCH_CHECK(saved.size() == 2, "LinearCrossEntropy: backward of a forward run without gradients");
      const at::Tensor scale = grad_out[0].to(saved[0].scalar_type()) * inv_n;
      return {(saved[0] * scale).to(ctx->saved_data["x_dtype"].toScalarType()),
              (saved[1] * scale).to(ctx->saved_data["w_dtype"].toScalarType()),
              at::Tensor(),
              at::Tensor(),
              at::Tensor(),
              at::Tensor(),
              at::Tensor()};
    }
    const at::Tensor& x = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& grad = saved[2];
    // d(mean loss)/dlogits = (softmax - onehot) / N, times the incoming scalar.
    const at::Tensor scale = grad_out[0] * inv_n;
    // grad is fp32 on the whole-tensor path; the gradients take their inputs' dtypes.
    at::Tensor dx = at::mm(grad, weight.to(grad.scalar_type())).mul_(scale).to(x.scalar_type());
    at::Tensor dw = at::mm(grad.t(), x.to(grad.scalar_type())).mul_(scale).to(weight.scalar_type());
    return {dx, dw, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor LinearCrossEntropy(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& targets,
                              LinearCrossEntropyPath path) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1),
              "LinearCrossEntropy: x [N, d] ", x.sizes(), " and weight [V, d] ", weight.sizes(),
              " do not match");
  TORCH_CHECK(targets.numel() == x.size(0), "LinearCrossEntropy: ", targets.numel(), " targets for ",
              x.size(0), " rows");
  if (path == LinearCrossEntropyPath::kAuto) {
    path = x.is_cpu() ? LinearCrossEntropyPath::kHostRows : LinearCrossEntropyPath::kChunked;
  }
  TORCH_CHECK(path != LinearCrossEntropyPath::kHostRows || (x.is_cpu() && weight.is_cpu()),
              "LinearCrossEntropy: the host-rows path needs CPU tensors, got ", x.device());
  // The forward runs with gradients off (autograd's rule), so whether they are wanted is decided here: eval
  // and no_grad calls compute the loss only.
  const bool need_grad = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad());
  return LinearCrossEntropyFunction::apply(x, weight, targets.reshape({-1}),
                                           path == LinearCrossEntropyPath::kWholeTensor,
                                           path == LinearCrossEntropyPath::kHostRows, need_grad);
}

}  // namespace nats
