// nats/nats_attention_reference.h
//
// The reference NAtS attention: dense, O(T^2) memory, obviously correct; the oracle every fast path is
// tested against (docs/method.md sections 4 and 5).
// - Forward (4): masked softmax under DenseMask of the hard types; keeps the row log-sum-exp of the masked
//   softmax and, for MaskGradMode::kUnmasked only, the unmasked causal one.
// - Backward (5.1): dq, dk, dv of ordinary masked-softmax attention; GQA sums over the n_rep query heads of
//   a KV head (query head h uses KV head h / n_rep, as repeat_interleave).
// - Backward (5.2-5.4): the gradient w.r.t. the one-hot types: G_ij per the grad mode, summed over the
//   n_rep query heads, turned into dL/dg, dL/dl, dL/ds by the EXACT sums of 5.3 (collected term included),
//   plus the sparsity regulariser of 5.4 (not scaled by any loss normalisation).
// Shapes: q [B, H, T, D]; k, v [B, H_kv, T, D]; int types [B, H_kv, T]; one-hot types [B, H_kv, T, 3]
// (TokenType order). Computation runs in float64 for double inputs, float32 otherwise.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "nats/attention.h"

namespace nats {

struct NatsReferenceForwardResult {
  at::Tensor out;         // [B, H, T, D]
  at::Tensor lse_masked;  // [B, H, T]: log Z^M_i
  at::Tensor lse_full;    // [B, H, T]: log Z^F_i (causal, no NAtS mask); undefined unless requested
};

NatsReferenceForwardResult NatsReferenceForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                const at::Tensor& types, int64_t window, bool keep_full_lse);

struct NatsReferenceGradients {
  at::Tensor dq, dk, dv;  // like q, k, v
  at::Tensor dtypes;      // [B, H_kv, T, 3] (dL/dg, dL/dl, dL/ds); undefined unless requested
};

// `forward` must come from NatsReferenceForward with the same inputs (lse_full defined for kUnmasked).
NatsReferenceGradients NatsReferenceBackward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& types,
                                             const NatsReferenceForwardResult& forward,
                                             const at::Tensor& dout, const AttentionOptions& options,
                                             bool need_type_grad);

// docs/method.md 5.2: G_ij for every causal pair (zero for j > i), summed over the n_rep query heads of each
// KV head: [B, H_kv, T, T].
at::Tensor MaskEntryGradient(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& types, const NatsReferenceForwardResult& forward,
                             const at::Tensor& dout, int64_t window, MaskGradMode mode);

// docs/method.md 5.3: (dL/dg, dL/dl, dL/ds) [B, H_kv, T, 3] from G [B, H_kv, T, T] (already summed over query
// heads): the exact derivative of sum_ij G_ij M_ij with M in product form, at the one-hot point `types`.
at::Tensor TypeGradientFromMaskGradient(const at::Tensor& mask_grad, const at::Tensor& types, int64_t window);

// docs/method.md 5.4: the regulariser's addition to the type gradient, [B, H_kv, T, 3] float64:
// lambda * n_rep * (N - j) / N on the global option of global j, lambda * n_rep * (e_j - j) / N on the local
// option of local j, zero elsewhere. By default `types` is the whole sequence (N = T, j from 0). For a chunk
// of a longer sequence (sequence parallelism): `begin` is its first absolute position, `length` is N, and
// `next_global_after` [B, H_kv] int64 is the first global position at or after the chunk's end (N - 1 when
// there is none), the e_j of the chunk's trailing non-global tokens.
at::Tensor SparsityRegulariserGradient(const at::Tensor& types, double lambda, int64_t n_rep,
                                       int64_t begin = 0, int64_t length = 0,
                                       const at::Tensor& next_global_after = {});

// The autograd-aware reference NAtS attention (custom forward/backward): what NatsAttention runs for
// AttentionImpl::kReference. `types` is the float one-hot [B, H_kv, T, 3]; its gradient is dtypes above.
at::Tensor ReferenceNatsAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& types, const AttentionOptions& options);

}  // namespace nats
