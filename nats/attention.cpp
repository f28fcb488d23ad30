// Dispatch for the attention entry point, and the dense causal baseline.
#include "nats/attention.h"

#include <torch/torch.h>

#include <cmath>

#include "nats/executed_flops.h"
#include "nats/fused_attention.h"

namespace nats {

at::Tensor DenseCausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t n_rep = q.size(1) / k.size(1);
  at::Tensor kk = k, vv = v;
  if (n_rep > 1) {
    kk = k.repeat_interleave(n_rep, /*dim=*/1);
    vv = v.repeat_interleave(n_rep, /*dim=*/1);
  }
  const int64_t tq = q.size(2), tk = k.size(2);
  TORCH_CHECK(tq <= tk, "dense attention: ", tq, " queries but only ", tk, " keys");
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  // Executed FLOPs: two products of Tq x Tk x D per head forward, four more backward (counted here too).
  const int64_t products = q.size(0) * q.size(1) * tq * tk * q.size(3) * 2;
  const bool backward =
      at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  AddExecutedAttentionFlops(products * (backward ? 6 : 2));
  at::Tensor scores = at::matmul(q, kk.transpose(-2, -1)) * scale;
  // Query i sits at key position (tk - tq) + i.
  at::Tensor causal = at::ones({tq, tk}, q.options().dtype(at::kBool)).triu(1 + tk - tq);
  scores = scores.masked_fill(causal, -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(scores, -1), vv);
}

at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& types,
                     const AttentionOptions& options) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention expects [B, H, T, D] tensors");
  TORCH_CHECK(q.size(1) % k.size(1) == 0, "n_head (", q.size(1), ") must be a multiple of n_kv_head (",
              k.size(1), ")");
  if (!types.defined()) {
    // Dense layers run the blocked kernel too (no T x T scores, no upper triangle); the matmul path stays as
    // the reference, and for a query chunk shorter than its keys (DenseCausalAttention's Tq < Tk case).
    if (options.impl == AttentionImpl::kFused && q.size(2) == k.size(2) && q.device().is_cpu()) {
      return FusedCausalAttention(q, k, v, options.query_begin);
    }
    return DenseCausalAttention(q, k, v);
  }
  return NatsAttention(q, k, v, types, options);
}

}  // namespace nats
