// nats/attention.h
//
// The single attention entry point of the model (docs/architecture.md section 5, nats/).
// Dense causal attention is the special case "every token global": callers pass an undefined
// `types` tensor and get plain causal softmax attention. NAtS layers pass the straight-through
// one-hot types from the scorer, and the call dispatches to the reference (dense O(T^2)) or the
// fused implementation selected in AttentionOptions.
//
// Shapes: q [B, H, T, D]; k, v [B, H_kv, T, D] (H a multiple of H_kv, GQA); types [B, H_kv, T, 3]
// float one-hot (option order TokenType: global, local, sliding). Output [B, H, T, D].
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace nats {

// How the gradient w.r.t. mask entries is formed (docs/method.md section 5.2).
enum class MaskGradMode { kClipped = 0, kExact = 1, kUnmasked = 2 };

enum class AttentionImpl { kReference = 0, kFused = 1 };

struct AttentionOptions {
  int64_t window = 16;  // W: sliding tokens are seen by queries j..j+W
  double lambda = 0.0;  // sparsity regulariser strength (docs/method.md section 5.4)
  MaskGradMode grad_mode = MaskGradMode::kClipped;
  AttentionImpl impl = AttentionImpl::kReference;
  // Rows before this one are not needed (a sequence-parallel prefix: zero queries, no output gradient). The
  // fused kernel skips the query blocks that end at or before it (their outputs are zero); the reference
  // computes every row. Callers must neither read those rows nor send them a gradient.
  int64_t query_begin = 0;
};

// Causal (dense) attention when `types` is undefined; NAtS attention otherwise.
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& types,
                     const AttentionOptions& options);

// Plain causal softmax attention, matmul-softmax-matmul (the dense baseline; GQA by repeating K/V). q may
// hold only the LAST Tq of the Tk key positions (a sequence-parallel chunk after its received prefix).
at::Tensor DenseCausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// NAtS attention; defined in nats_attention.cpp (reference) and the fused kernel file.
at::Tensor NatsAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& types, const AttentionOptions& options);

// Attention for one contiguous chunk of a sequence whose earlier positions live on other ranks (sequence
// parallelism; implemented by parallel::SequenceParallel, docs/method.md section 7). nats/ only sees this
// interface and never talks to other ranks itself. q, k, v, types as Attention() for the chunk's positions
// (RoPE applied at absolute positions); the result equals the rows of a whole-sequence Attention() call.
class ChunkAttention {
 public:
  virtual ~ChunkAttention() = default;
  // Absolute position of the chunk's first token and the whole sequence's length N.
  virtual int64_t chunk_begin() const = 0;
  virtual int64_t sequence_length() const = 0;
  virtual at::Tensor Attend(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& types, const AttentionOptions& options) = 0;
};

}  // namespace nats
