// Dispatch for the attention entry point, and the dense causal baseline.
#include "nats/attention.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>

#include "nats/executed_flops.h"
#include "nats/fused_attention.h"

// at::scaled_dot_product_attention exists from LibTorch 2.0 (Debian's 1.13 lacks it).
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
#define NATS_TORCH_HAS_SDPA 1
#else
#define NATS_TORCH_HAS_SDPA 0
#endif

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
#if NATS_TORCH_HAS_SDPA
    // On a GPU, dense layers run LibTorch's fused SDPA (flash attention where it applies): what the PyTorch
    // peers use, and far faster than the row-wise NAtS kernel with every token global.
    if (options.impl == AttentionImpl::kFused && q.size(2) == k.size(2) && q.is_cuda()) {
      const int64_t n_rep = q.size(1) / k.size(1);
      const at::Tensor kk = n_rep > 1 ? k.repeat_interleave(n_rep, /*dim=*/1) : k;
      const at::Tensor vv = n_rep > 1 ? v.repeat_interleave(n_rep, /*dim=*/1) : v;
      // Executed FLOPs: the causal half of the two T x T x D products forward, four more backward.
      const int64_t t = q.size(2), pairs = t * (t + 1) / 2;
      const bool backward =
          at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
      AddExecutedAttentionFlops(q.size(0) * q.size(1) * pairs * q.size(3) * 2 * (backward ? 6 : 2));
      return at::scaled_dot_product_attention(q, kk, vv, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                              /*is_causal=*/true);
    }
#endif
    return DenseCausalAttention(q, k, v);
  }
  return NatsAttention(q, k, v, types, options);
}

}  // namespace nats
