// nats/attention_shapes.h
//
// The one shape check of the attention kernels (the reference nats/nats_attention.cpp and the fused
// nats/fused/): q [B, H, T, D]; k, v [B, H_kv, T, D] with H a multiple of H_kv (GQA); int types
// [B, H_kv, T]. Violations throw c10::Error (TORCH_CHECK) with the shapes in the message.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace nats {

struct AttentionDims {
  int64_t b, h, h_kv, n_rep, t, d;  // n_rep = H / H_kv query heads per KV head
};

AttentionDims CheckAttentionShapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& types);

// The dtype the kernels compute in: float64 for double inputs (tight tests), float32 otherwise.
at::ScalarType AttentionComputeType(const at::Tensor& q);

}  // namespace nats
