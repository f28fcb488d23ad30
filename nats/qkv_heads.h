// nats/qkv_heads.h
//
// The step from the fused Q/K/V projection to the attention kernels' layout, in one pass each way: qkv
// [B, T, (H + 2 H_kv) D] becomes contiguous q [B, H, T, D], k, v [B, H_kv, T, D], with the rotary embedding
// (halves convention, as ApplyRope in nats/transformer.h) applied to q and k at positions offset..offset+T-1.
// The composition it replaces (narrow, view, transpose, ApplyRope's two muls, sub/add and cat per tensor,
// then .contiguous() in the kernels) made about a dozen passes, and its backward zero-filled a full
// [B, T, (H + 2 H_kv) D] gradient per slice and added the three; here the backward applies the inverse
// rotation and writes dqkv once. float and double on CPU; other dtypes or devices take the composition.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace nats {

struct QkvHeads {
  at::Tensor q, k, v;
};

// cos, sin: [max_T, D / 2] tables (any float dtype), or undefined for no rotation (learned positions).
QkvHeads SplitQkvHeads(const at::Tensor& qkv, int64_t n_head, int64_t n_kv_head, int64_t head_dim,
                       const at::Tensor& cos, const at::Tensor& sin, int64_t offset);

// The reference composition (narrow / view / transpose / ApplyRope), which SplitQkvHeads is tested against.
QkvHeads SplitQkvHeadsReference(const at::Tensor& qkv, int64_t n_head, int64_t n_kv_head, int64_t head_dim,
                                const at::Tensor& cos, const at::Tensor& sin, int64_t offset);

}  // namespace nats
