// nats/masks.h
//
// Attention masks of Neural Attention Search (docs/method.md section 3) and the per-layer mask statistics
// that training and evaluation log (sections 3, 6).
// Types are per KV head: integer tensors [B, H_kv, T] (int8 or int64) holding TokenType values
// (nats/token_type.h). Everything here is a pure function of its inputs and works on any device. DenseMask
// is O(T^2) memory: the reference attention and the tests use it; fast paths recompute the rule on the fly.
//
// Boundary convention: positions past the window are unknown, so "no global at or after j" is encoded as
// T-1. With it, [i <= e_j] keeps such a local visible to every later row of the window, which is exactly
// what the product form of section 3 gives (the product over k in (j, i) has no zero factor).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace nats {

// e[j] = first position >= j whose type is global; T-1 when there is none. int64 [B, H_kv, T].
at::Tensor NextGlobalIndex(const at::Tensor& types);

// f[j] = first position > j whose type is global; T-1 when there is none (always for j = T-1).
// For a non-global j, f[j] == e[j]. int64 [B, H_kv, T].
at::Tensor FirstGlobalAfter(const at::Tensor& types);

// p[j] = last position < j whose type is global; -1 when there is none. int64 [B, H_kv, T].
at::Tensor PrevGlobalIndex(const at::Tensor& types);

// Dense boolean mask [B, H_kv, T, T] (row = query i, column = key j) per docs/method.md 3: causal, global
// keys always visible, local keys while i <= e_j, sliding keys while i - j <= window; the diagonal always.
at::Tensor DenseMask(const at::Tensor& types, int64_t window);

// Number of query rows of the window that see key j (the column sums of DenseMask, computed in O(T)):
// T - j (global), e_j - j + 1 (local), min(T-1, j+W) - j + 1 (sliding). int64 [B, H_kv, T].
at::Tensor VisibleRowCount(const at::Tensor& types, int64_t window);

// Kept mask area / causal area T(T+1)/2, per (batch, KV head). float64 [B, H_kv].
at::Tensor MaskDensity(const at::Tensor& types, int64_t window);

// Fraction of positions of each type, per (batch, KV head), last dim in TokenType order. float64 [B, H_kv,
// 3].
at::Tensor TypeFractions(const at::Tensor& types);

// docs/method.md 6 `kv_retained`: the KV entries an inference cache holds after processing positions 0..T-1,
// i.e. the keys a next query at position T could see under the rule of section 3:
//   every global j  +  every local j with no global in [j, T-1]  +  every sliding j with j >= T - window.
// (The query's own new token is not counted.) int64 [B, H_kv].
at::Tensor KvRetained(const at::Tensor& types, int64_t window);

// The reference-compatible count |G| + |L| + W (globals, locals after the last global, and W ring slots,
// counted whether or not they are filled, as the reference cache does). int64 [B, H_kv].
at::Tensor KvRetainedReferenceCount(const at::Tensor& types, int64_t window);

// Per-layer statistics logged as metrics; each is the mean over the batch, one value per KV head.
struct MaskStats {
  at::Tensor density;                // [H_kv] float64: MaskDensity
  at::Tensor type_fraction;          // [H_kv, 3] float64: TypeFractions
  at::Tensor kv_fraction;            // [H_kv] float64: KvRetained / T
  at::Tensor kv_fraction_reference;  // [H_kv] float64: KvRetainedReferenceCount / T
};
MaskStats ComputeMaskStats(const at::Tensor& types, int64_t window);

// int8 types [B, H_kv, T] of a float one-hot [B, H_kv, T, 3] (the scorer's straight-through output).
// TORCH_CHECK-fails unless it is exactly one-hot: the mask is defined at one-hot points only, and a soft
// input would otherwise be silently rounded by the argmax.
at::Tensor TypesFromOneHot(const at::Tensor& onehot);

}  // namespace nats
