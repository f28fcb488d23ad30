// The autograd wrappers of the fused attention (nats/fused_attention.h); the kernel itself is in nats/fused/:
// forward.cpp, backward.cpp, and their tile BLAS, row kernels, mask data and task schedule.
#include "nats/fused_attention.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "nats/masks.h"
#include "nats/token_type.h"

namespace nats {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class FusedNatsAttentionFunction : public torch::autograd::Function<FusedNatsAttentionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& onehot, int64_t window, double lambda,
                            int64_t grad_mode, int64_t query_begin) {
    const at::Tensor types = TypesFromOneHot(onehot);
    const auto mode = static_cast<MaskGradMode>(grad_mode);
    const bool full = mode == MaskGradMode::kUnmasked;  // Z^F is needed only by that mode's type gradient
    FusedForwardResult fwd = FusedNatsForward(q, k, v, types, window, /*keep_lse=*/true, full, query_begin);
    ctx->saved_data["query_begin"] = query_begin;
    ctx->save_for_backward({q, k, v, types, fwd.out, fwd.lse_masked, fwd.lse_full});
    ctx->saved_data["window"] = window;
    ctx->saved_data["lambda"] = lambda;
    ctx->saved_data["grad_mode"] = grad_mode;
    ctx->saved_data["types_dtype"] = onehot.scalar_type();
    return fwd.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    FusedForwardResult fwd{saved[4], saved[5], saved[6]};
    AttentionOptions options;
    options.window = ctx->saved_data["window"].toInt();
    options.lambda = ctx->saved_data["lambda"].toDouble();
    options.grad_mode = static_cast<MaskGradMode>(ctx->saved_data["grad_mode"].toInt());
    options.query_begin = ctx->saved_data["query_begin"].toInt();
    at::Tensor dout = grad_outputs[0];
    if (!dout.defined()) dout = at::zeros_like(saved[0]);
    const bool need_type_grad = ctx->needs_input_grad(3);
    FusedGradients grads =
        FusedNatsBackward(saved[0], saved[1], saved[2], saved[3], fwd, dout, options, need_type_grad);
    at::Tensor dtypes;
    if (need_type_grad) dtypes = grads.dtypes.to(ctx->saved_data["types_dtype"].toScalarType());
    return {grads.dq, grads.dk, grads.dv, dtypes, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Every token global (TokenType::kGlobal == 0): the causal mask, with window 0 (no sliding tokens exist).
at::Tensor AllGlobalTypes(const at::Tensor& q, const at::Tensor& k) {
  static_assert(static_cast<int>(TokenType::kGlobal) == 0, "zeros are global types");
  return at::zeros({q.size(0), k.size(1), q.size(2)},
                   at::TensorOptions().dtype(at::kChar).device(q.device()));
}

class FusedCausalAttentionFunction : public torch::autograd::Function<FusedCausalAttentionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, int64_t query_begin) {
    FusedForwardResult fwd = FusedNatsForward(q, k, v, AllGlobalTypes(q, k), /*window=*/0, /*keep_lse=*/true,
                                              /*keep_full_lse=*/false, query_begin);
    ctx->saved_data["query_begin"] = query_begin;
    ctx->save_for_backward({q, k, v, fwd.out, fwd.lse_masked});
    return fwd.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    FusedForwardResult fwd{saved[3], saved[4], at::Tensor()};
    AttentionOptions options;
    options.window = 0;
    options.query_begin = ctx->saved_data["query_begin"].toInt();
    at::Tensor dout = grad_outputs[0];
    if (!dout.defined()) dout = at::zeros_like(saved[0]);
    FusedGradients grads = FusedNatsBackward(saved[0], saved[1], saved[2], AllGlobalTypes(saved[0], saved[1]),
                                             fwd, dout, options, /*need_type_grad=*/false);
    return {grads.dq, grads.dk, grads.dv, at::Tensor()};
  }
};

}  // namespace

at::Tensor FusedCausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                int64_t query_begin) {
  const bool needs_grad =
      at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (!needs_grad) return NatsSparsePrefill(q, k, v, AllGlobalTypes(q, k), /*window=*/0, query_begin);
  return FusedCausalAttentionFunction::apply(q, k, v, query_begin);
}

at::Tensor FusedNatsAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& types, const AttentionOptions& options) {
  TORCH_CHECK(options.window >= 0, "NAtS window must be >= 0, got ", options.window);
  const bool needs_grad = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() ||
                                                         v.requires_grad() || types.requires_grad());
  if (!needs_grad) {
    // Inference: no lse to keep, no autograd node; only the keys each query sees are visited.
    return NatsSparsePrefill(q, k, v, TypesFromOneHot(types), options.window, options.query_begin);
  }
  return FusedNatsAttentionFunction::apply(q, k, v, types, options.window, options.lambda,
                                           static_cast<int64_t>(options.grad_mode), options.query_begin);
}

}  // namespace nats
