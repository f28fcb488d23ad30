// nats/fused_attention.h
//
// Fused (flash-style) NAtS attention on CPU: the fast twin of nats/nats_attention_reference.h, computing the
// same quantities (docs/method.md sections 3, 4, 5.1-5.4) in O(T) extra memory. Selected by
// AttentionOptions::impl = AttentionImpl::kFused through the single entry point nats/attention.h.
// - The mask (section 3) is never materialised: every key j is visible to the contiguous row interval
//   [j, L_j] with L_j = T-1 (global), e_j (local), min(T-1, j+W) (sliding), recomputed from the int types.
// - Forward (4): blocked online softmax over the keys a query block can see (globals, live locals, window),
//   so its cost is T x retained keys, not T^2; keeps the row log-sum-exp of the masked softmax and, for
//   MaskGradMode::kUnmasked only, the causal one (then it visits every causal key).
// - Backward (5.1-5.4): dq, dk, dv, and, when asked, the type gradient dL/d(g, l, s) with the exact sums of
//   5.3 (collected term included), all three grad modes, plus the regulariser of 5.4. The type gradient
//   needs the mask-entry gradient G_ij on every causal pair, masked ones included, so that part visits all
//   causal tiles (O(T^2) time, O(T) memory); without it only visible keys are visited.
// Shapes and dtypes as the reference: q [B, H, T, D]; k, v [B, H_kv, T, D]; int types [B, H_kv, T] (int8 or
// int64, TokenType values); one-hot types [B, H_kv, T, 3]. Computation runs in float64 for double inputs,
// float32 otherwise. Results agree with the reference to float rounding.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "nats/attention.h"

namespace nats {

struct FusedForwardResult {
  at::Tensor out;         // like q
  at::Tensor lse_masked;  // [B, H, T] compute dtype: log Z^M_i; undefined unless requested
  at::Tensor
      lse_full;  // [B, H, T] compute dtype: log Z^F_i (causal, no NAtS mask); undefined unless requested
};

// docs/method.md 4. `keep_full_lse` makes the forward visit every causal key (needed by
// MaskGradMode::kUnmasked). Query blocks ending at or before `query_begin` are skipped (zero output;
// AttentionOptions::query_begin).
FusedForwardResult FusedNatsForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& types, int64_t window, bool keep_lse,
                                    bool keep_full_lse, int64_t query_begin = 0);

struct FusedGradients {
  at::Tensor dq, dk, dv;  // like q, k, v
  at::Tensor dtypes;      // [B, H_kv, T, 3] compute dtype (dL/dg, dL/dl, dL/ds); undefined unless requested
};

// docs/method.md 5. `forward` must come from FusedNatsForward with the same inputs and keep_lse = true
// (and keep_full_lse = true for kUnmasked when `need_type_grad`).
FusedGradients FusedNatsBackward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& types, const FusedForwardResult& forward,
                                 const at::Tensor& dout, const AttentionOptions& options,
                                 bool need_type_grad);

// Inference prefill (no autograd): each query attends only to the keys it can see, cost ~ T x retained.
// Same output as the training-mode forward with the same int types. Returns [B, H, T, D] like q.
at::Tensor NatsSparsePrefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& types, int64_t window, int64_t query_begin = 0);

// The autograd-aware fused NAtS attention: what NatsAttention runs for AttentionImpl::kFused. `types` is the
// exactly one-hot [B, H_kv, T, 3]; its gradient is dtypes above. With grad mode off (or nothing needing a
// gradient) it runs NatsSparsePrefill directly.
at::Tensor FusedNatsAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& types, const AttentionOptions& options);

// Dense causal attention through the same blocked kernel: every type global, no type gradient. The fast twin
// of DenseCausalAttention (nats/attention.h, the reference it is tested against): O(T) extra memory, and the
// key tiles above the diagonal are never computed. q [B, H, T, D], k, v [B, H_kv, T, D] (GQA inside the
// kernel, no repeated K/V); rows before `query_begin` as AttentionOptions::query_begin.
at::Tensor FusedCausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                int64_t query_begin = 0);

}  // namespace nats
