// nats/fused/tile_meta.h (internal to the fused kernel, nats/fused/)
//
// The mask as the kernel sees it, O(T) per (batch, KV head): key j is visible to the rows [j, L_j], with
// L_j = T-1 (global), e_j (local: up to the next global), min(T-1, j+W) (sliding). From it: the key columns a
// query block must visit (VisibleColumns: the tile skipping and the sparse prefill of forward.cpp), and the
// per-chunk key data the row kernels read (ChunkKeys).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "nats/attention_shapes.h"
#include "nats/fused/tile_blas.h"

namespace nats::fused {

// Per (batch, KV head) mask data.
struct HeadMeta {
  std::vector<int32_t> last;     // L_j
  std::vector<int32_t> next;     // f_j
  std::vector<int8_t> type;      // TokenType values
  std::vector<int32_t> globals;  // sorted positions
  std::vector<int32_t> locals;   // sorted positions
};

// From int types [B, H_kv, T] (TokenType values; anything else throws); one HeadMeta per (batch, KV head).
std::vector<HeadMeta> BuildMeta(const at::Tensor& types, int64_t window);

// The keys some row of [i0, i1) can see, ascending: every global < i0 - W, the locals after the last global
// before i0 (no global in between, so e_j >= i0), and the keys in [i0 - W, i1) with L_j >= i0.
void VisibleColumns(const HeadMeta& m, int32_t i0, int32_t i1, int64_t window, std::vector<int32_t>* cols);

// 0, 1, ..., i1 - 1: every causal key of a block ending at i1 (the type gradient needs them all).
void AllCausalColumns(int32_t i1, std::vector<int32_t>* cols);

// Per-chunk key data, gathered once per chunk.
struct ChunkKeys {
  int n = 0;
  int32_t col[kBlock];
  int32_t last[kBlock];  // L_j: last visible row
  int32_t next[kBlock];  // f_j: first global > j (T-1 if none)
  int8_t type[kBlock];
  // Every row i with max_col <= i <= min_last sees the whole chunk: the row kernels skip its masks.
  int32_t max_col = 0;
  int32_t min_last = 0;
};

void FillChunk(const HeadMeta& m, const int32_t* cols, int n, ChunkKeys* ck);

inline bool Contiguous(const ChunkKeys& ck) { return ck.n > 0 && ck.col[ck.n - 1] - ck.col[0] == ck.n - 1; }

// Rows of x [T, D] at the chunk's columns, contiguous: a pointer into x when they already are, else a copy.
template <typename T>
inline const T* GatherRows(const T* x, const int32_t* cols, int n, bool contiguous, int d, T* buffer) {
  if (contiguous) return x + static_cast<int64_t>(cols[0]) * d;
  for (int c = 0; c < n; ++c)
    std::memcpy(buffer + c * d, x + static_cast<int64_t>(cols[c]) * d, sizeof(T) * d);
  return buffer;
}

// CheckAttentionShapes plus the fused kernel's own limit (int32 positions).
AttentionDims CheckFusedShapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& types);

}  // namespace nats::fused
