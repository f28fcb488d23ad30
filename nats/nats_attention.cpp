// Reference NAtS attention: dense masked softmax with the custom backward of docs/method.md 5 (the oracle).
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "nats/attention.h"
#include "nats/attention_shapes.h"
#include "nats/fused_attention.h"
#include "nats/masks.h"
#include "nats/nats_attention_reference.h"
#include "nats/token_type.h"

namespace nats {
namespace {

using Dims = AttentionDims;

// Queries grouped by KV head, [B, H_kv, n_rep, T, D]; keys/values [B, H_kv, 1, T, D] broadcast over n_rep.
at::Tensor GroupHeads(const at::Tensor& x, const Dims& dims, at::ScalarType type) {
  return x.to(type).reshape({dims.b, dims.h_kv, x.size(1) / dims.h_kv, dims.t, dims.d});
}

// What forward and backward share: logits a, the hard mask and the causal mask, all broadcastable to
// [B, H_kv, n_rep, T, T].
struct Scores {
  at::Tensor q5, k5, v5;
  at::Tensor logits;   // [B, H_kv, n_rep, T, T]: a_ij = q_i . k_j / sqrt(D), no mask applied
  at::Tensor visible;  // [B, H_kv, 1, T, T] bool: DenseMask
  at::Tensor causal;   // [T, T] bool
  double scale;
};

Scores ComputeScores(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& types,
                     int64_t window, const Dims& dims) {
  const at::ScalarType type = AttentionComputeType(q);
  Scores s;
  s.q5 = GroupHeads(q, dims, type);
  s.k5 = GroupHeads(k, dims, type);
  s.v5 = GroupHeads(v, dims, type);
  s.scale = 1.0 / std::sqrt(static_cast<double>(dims.d));
  s.logits = at::matmul(s.q5, s.k5.transpose(-2, -1)) * s.scale;
  s.visible = DenseMask(types, window).unsqueeze(2);
  s.causal = at::ones({dims.t, dims.t}, types.options().dtype(at::kBool)).tril();
  return s;
}

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

at::Tensor ToHeads(const at::Tensor& x5, const Dims& dims) {
  return x5.reshape({dims.b, dims.h, dims.t, -1});
}

// The visible softmax probabilities P_ij = M_ij exp(a_ij) / Z^M_i, [B, H_kv, n_rep, T, T].
at::Tensor MaskedProbabilities(const Scores& s, const at::Tensor& lse_masked5) {
  return (s.logits - lse_masked5.unsqueeze(-1)).exp().masked_fill(s.visible.logical_not(), 0.0);
}

// docs/method.md 5.2 on every causal pair, per query head: [B, H_kv, n_rep, T, T]. dp = dO_i . v_j, delta =
// dO_i . O_i.
at::Tensor MaskEntryGradientPerHead(const Scores& s, const at::Tensor& lse_masked5,
                                    const at::Tensor& lse_full5, const at::Tensor& dp,
                                    const at::Tensor& delta, MaskGradMode mode) {
  at::Tensor ratio;  // exp(a_ij) / Z_i with Z per mode
  switch (mode) {
    case MaskGradMode::kExact:
      ratio = (s.logits - lse_masked5.unsqueeze(-1)).exp();
      break;
    case MaskGradMode::kClipped:  // min(exp(a)/Z^M, 1): exact on visible entries, bounded on masked ones
      ratio = (s.logits - lse_masked5.unsqueeze(-1)).clamp_max(0.0).exp();
      break;
    case MaskGradMode::kUnmasked:
      TORCH_INTERNAL_ASSERT(lse_full5.defined(), "unmasked grad mode needs the causal log-sum-exp");
      ratio = (s.logits - lse_full5.unsqueeze(-1)).exp();
      break;
  }
  TORCH_INTERNAL_ASSERT(ratio.defined(), "unknown MaskGradMode ", static_cast<int>(mode));
  // `where`, not a product: above the diagonal the ratio is meaningless and may overflow.
  return at::where(s.causal, ratio * (dp - delta), at::zeros({}, ratio.options()));
}

at::Tensor Lse5(const at::Tensor& lse, const Dims& dims, at::ScalarType type) {
  return lse.to(type).reshape({dims.b, dims.h_kv, dims.n_rep, dims.t});
}

}  // namespace

NatsReferenceForwardResult NatsReferenceForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                const at::Tensor& types, int64_t window, bool keep_full_lse) {
  const Dims dims = CheckAttentionShapes(q, k, v, types);
  const Scores s = ComputeScores(q, k, v, types, window, dims);
  NatsReferenceForwardResult result;
  // docs/method.md 4: masked softmax; the diagonal is always visible so every row has a finite log-sum-exp.
  at::Tensor lse_masked5 = at::logsumexp(s.logits.masked_fill(s.visible.logical_not(), kNegInf), -1);
  at::Tensor p = MaskedProbabilities(s, lse_masked5);
  result.out = ToHeads(at::matmul(p, s.v5), dims).to(q.scalar_type());
  result.lse_masked = lse_masked5.reshape({dims.b, dims.h, dims.t});
  if (keep_full_lse) {
    result.lse_full = at::logsumexp(s.logits.masked_fill(s.causal.logical_not(), kNegInf), -1)
                          .reshape({dims.b, dims.h, dims.t});
  }
  return result;
}

at::Tensor TypeGradientFromMaskGradient(const at::Tensor& mask_grad, const at::Tensor& types,
                                        int64_t window) {
  TORCH_CHECK(mask_grad.dim() == 4 && types.dim() == 3 && mask_grad.size(0) == types.size(0) &&
                  mask_grad.size(1) == types.size(1) && mask_grad.size(2) == types.size(2) &&
                  mask_grad.size(3) == types.size(2),
              "mask gradient ", mask_grad.sizes(), " does not match types ", types.sizes());
  const int64_t t = types.size(2);
  at::Tensor pos = at::arange(t, types.options().dtype(at::kLong));
  at::Tensor i = pos.view({t, 1});
  at::Tensor j = pos.view({1, t});
  at::Tensor g = mask_grad.masked_fill(j.gt(i), 0.0);  // causal pairs only

  // dL/ds_j = sum_{i=j}^{min(T-1, j+W)} G_ij
  at::Tensor d_sliding = g.masked_fill((i - j).gt(window), 0.0).sum(-2);
  // dL/dl_j = sum_{i=j}^{f_j} G_ij: the rows with no global strictly between j and i.
  at::Tensor f = FirstGlobalAfter(types).unsqueeze(-2);  // per column
  at::Tensor d_local = g.masked_fill(i.gt(f), 0.0).sum(-2);
  // docs/method.md 5.3: collected term C_j = sum_{k in (p_j, j), l_k = 1} sum_{i=j+1}^{f_j} G_ik. Making j
  // global cuts the current segment's locals off for rows j+1..f_j. Prefix sums over local columns per row,
  // S[i, k] = sum_{k' <= k, l_k'} G_ik', turn the column range (p_j, j) into S[i, j-1] - S[i, p_j].
  at::Tensor is_local = types.eq(static_cast<int64_t>(TokenType::kLocal)).unsqueeze(-2);
  at::Tensor prefix = g.masked_fill(is_local.logical_not(), 0.0).cumsum(-1);
  at::Tensor before_j = at::constant_pad_nd(prefix.narrow(-1, 0, t - 1), {1, 0}, 0.0);  // S[i, j-1]
  at::Tensor p = PrevGlobalIndex(types).unsqueeze(-2);                                  // [B, H_kv, 1, T]
  at::Tensor at_p = at::gather(prefix, -1, p.clamp_min(0).expand_as(prefix)).masked_fill(p.lt(0), 0.0);
  at::Tensor rows = i.gt(j).logical_and(i.le(f));
  at::Tensor collected = (before_j - at_p).masked_fill(rows.logical_not(), 0.0).sum(-2);
  at::Tensor d_global = g.sum(-2) - collected;
  return at::stack({d_global, d_local, d_sliding}, -1);  // TokenType order
}

at::Tensor SparsityRegulariserGradient(const at::Tensor& types, double lambda, int64_t n_rep, int64_t begin,
                                       int64_t length, const at::Tensor& next_global_after) {
  const int64_t t = types.size(2);
  if (length == 0) length = begin + t;
  const at::Tensor is_global = types.eq(static_cast<int64_t>(TokenType::kGlobal));
  at::Tensor j = at::arange(begin, begin + t, types.options().dtype(at::kDouble)).view({1, 1, t});
  at::Tensor e = NextGlobalIndex(types).to(at::kDouble) + static_cast<double>(begin);
  if (next_global_after.defined()) {
    // No global at or after j inside the chunk: e_j lies beyond it (NextGlobalIndex then says T-1).
    at::Tensor none = is_global.flip(-1).cumsum(-1).flip(-1).eq(0);
    e = at::where(none, next_global_after.to(e.options()).unsqueeze(-1).expand_as(e), e);
  }
  const double c = lambda * static_cast<double>(n_rep) / static_cast<double>(length);
  at::Tensor zero = at::zeros({}, j.options());
  // docs/method.md 5.4: charge each selected global/local token for the mask area it keeps.
  at::Tensor reg_global = at::where(is_global, c * (static_cast<double>(length) - j), zero);
  at::Tensor reg_local = at::where(types.eq(static_cast<int64_t>(TokenType::kLocal)), c * (e - j), zero);
  return at::stack({reg_global, reg_local, at::zeros_like(reg_local)}, -1);
}

namespace {

// Backward intermediates shared by MaskEntryGradient and NatsReferenceBackward.
struct BackwardState {
  Scores s;
  at::Tensor lse_masked5, lse_full5;
  at::Tensor p;      // visible probabilities [B, H_kv, n_rep, T, T]
  at::Tensor dout5;  // [B, H_kv, n_rep, T, D]
  at::Tensor dp;     // dO_i . v_j
  at::Tensor delta;  // dO_i . O_i, [B, H_kv, n_rep, T, 1]
};

BackwardState PrepareBackward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& types, const NatsReferenceForwardResult& forward,
                              const at::Tensor& dout, int64_t window, const Dims& dims) {
  TORCH_CHECK(dout.sizes() == q.sizes(), "dout ", dout.sizes(), " must match q ", q.sizes());
  TORCH_CHECK(forward.out.defined() && forward.lse_masked.defined(),
              "backward needs the forward's out and lse");
  const at::ScalarType type = AttentionComputeType(q);
  BackwardState st;
  st.s = ComputeScores(q, k, v, types, window, dims);
  st.lse_masked5 = Lse5(forward.lse_masked, dims, type);
  if (forward.lse_full.defined()) st.lse_full5 = Lse5(forward.lse_full, dims, type);
  st.p = MaskedProbabilities(st.s, st.lse_masked5);
  st.dout5 = GroupHeads(dout, dims, type);
  st.dp = at::matmul(st.dout5, st.s.v5.transpose(-2, -1));
  st.delta = (st.dout5 * GroupHeads(forward.out, dims, type)).sum(-1, /*keepdim=*/true);
  return st;
}

}  // namespace

at::Tensor MaskEntryGradient(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& types, const NatsReferenceForwardResult& forward,
                             const at::Tensor& dout, int64_t window, MaskGradMode mode) {
  const Dims dims = CheckAttentionShapes(q, k, v, types);
  const BackwardState st = PrepareBackward(q, k, v, types, forward, dout, window, dims);
  // Summed over the n_rep query heads of each KV head (docs/method.md 5.3).
  return MaskEntryGradientPerHead(st.s, st.lse_masked5, st.lse_full5, st.dp, st.delta, mode).sum(2);
}

NatsReferenceGradients NatsReferenceBackward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& types,
                                             const NatsReferenceForwardResult& forward,
                                             const at::Tensor& dout, const AttentionOptions& options,
                                             bool need_type_grad) {
  const Dims dims = CheckAttentionShapes(q, k, v, types);
  const BackwardState st = PrepareBackward(q, k, v, types, forward, dout, options.window, dims);
  NatsReferenceGradients grads;
  // docs/method.md 5.1: ordinary masked-softmax gradients; GQA sums over the query heads sharing a KV head.
  at::Tensor ds = st.p * (st.dp - st.delta);
  grads.dq = ToHeads(at::matmul(ds, st.s.k5) * st.s.scale, dims).to(q.scalar_type());
  grads.dk = (at::matmul(ds.transpose(-2, -1), st.s.q5).sum(2) * st.s.scale).to(k.scalar_type());
  grads.dv = at::matmul(st.p.transpose(-2, -1), st.dout5).sum(2).to(v.scalar_type());
  if (need_type_grad) {
    at::Tensor g =
        MaskEntryGradientPerHead(st.s, st.lse_masked5, st.lse_full5, st.dp, st.delta, options.grad_mode)
            .sum(2);
    grads.dtypes = TypeGradientFromMaskGradient(g, types, options.window);
    if (options.lambda != 0.0) {
      // docs/method.md 5.4: added to the type gradient directly, not through the loss (no loss
      // normalisation).
      grads.dtypes =
          grads.dtypes + SparsityRegulariserGradient(types, options.lambda, dims.n_rep).to(g.scalar_type());
    }
  }
  return grads;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Custom autograd node: forward with the hard mask, backward per docs/method.md 5 (including dL/dtypes, which
// plain autograd of a masked softmax cannot give: the mask is a step function of the types).
class ReferenceNatsAttentionFunction : public torch::autograd::Function<ReferenceNatsAttentionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& onehot, int64_t window, double lambda,
                            int64_t grad_mode) {
    const at::Tensor types = TypesFromOneHot(onehot);
    const auto mode = static_cast<MaskGradMode>(grad_mode);
    NatsReferenceForwardResult fwd =
        NatsReferenceForward(q, k, v, types, window, /*keep_full_lse=*/mode == MaskGradMode::kUnmasked);
    ctx->save_for_backward({q, k, v, types, fwd.out, fwd.lse_masked, fwd.lse_full});
    ctx->saved_data["window"] = window;
    ctx->saved_data["lambda"] = lambda;
    ctx->saved_data["grad_mode"] = grad_mode;
    ctx->saved_data["types_dtype"] = onehot.scalar_type();
    return fwd.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& q = saved[0];
    const at::Tensor& k = saved[1];
    const at::Tensor& v = saved[2];
    const at::Tensor& types = saved[3];
    NatsReferenceForwardResult fwd{saved[4], saved[5], saved[6]};
    AttentionOptions options;
    options.window = ctx->saved_data["window"].toInt();
    options.lambda = ctx->saved_data["lambda"].toDouble();
    options.grad_mode = static_cast<MaskGradMode>(ctx->saved_data["grad_mode"].toInt());
    at::Tensor dout = grad_outputs[0];
    if (!dout.defined()) dout = at::zeros_like(q);
    const bool need_type_grad = ctx->needs_input_grad(3);
    NatsReferenceGradients grads = NatsReferenceBackward(q, k, v, types, fwd, dout, options, need_type_grad);
    at::Tensor dtypes;
    if (need_type_grad) dtypes = grads.dtypes.to(ctx->saved_data["types_dtype"].toScalarType());
    return {grads.dq, grads.dk, grads.dv, dtypes, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor ReferenceNatsAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& types, const AttentionOptions& options) {
  TORCH_CHECK(options.window >= 0, "NAtS window must be >= 0, got ", options.window);
  return ReferenceNatsAttentionFunction::apply(q, k, v, types, options.window, options.lambda,
                                               static_cast<int64_t>(options.grad_mode));
}

at::Tensor NatsAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& types, const AttentionOptions& options) {
  if (options.impl == AttentionImpl::kFused) return FusedNatsAttention(q, k, v, types, options);
  return ReferenceNatsAttention(q, k, v, types, options);
}

}  // namespace nats
